"""Resolving JVM servers from Maven Central into the shared cache with Maven itself."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from devstack.base import StackContext
from devstack.errors import DevstackError
from devstack.progress import Phase

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.devstack</groupId>
  <artifactId>{artifact}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
{management}  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _dependency_xml(coordinate: str, exclusions: Sequence[str]) -> str:
    parts = coordinate.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"expected group:artifact:version[:classifier], got {coordinate!r}")
    group, artifact, version = (escape(p) for p in parts[:3])
    classifier = f"<classifier>{escape(parts[3])}</classifier>" if len(parts) == 4 else ""
    excluded = "".join(
        f"<exclusion><groupId>{escape(g)}</groupId><artifactId>{escape(a)}</artifactId></exclusion>"
        for g, a in (e.split(":") for e in exclusions)
    )
    return (
        f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version>{classifier}"
        f"{'<exclusions>' + excluded + '</exclusions>' if excluded else ''}</dependency>"
    )


def _management_xml(boms: Sequence[str]) -> str:
    """A ``dependencyManagement`` section importing ``boms`` (group:artifact:version), or nothing."""
    if not boms:
        return ""
    imports = []
    for bom in boms:
        parts = bom.split(":")
        if len(parts) != 3:
            raise ValueError(f"expected group:artifact:version for a BOM, got {bom!r}")
        group, artifact, version = (escape(p) for p in parts)
        imports.append(
            f"      <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version><type>pom</type><scope>import</scope></dependency>"
        )
    body = "\n".join(imports)
    return f"  <dependencyManagement>\n    <dependencies>\n{body}\n    </dependencies>\n  </dependencyManagement>\n"


def resolve_classpath(
    ctx: StackContext,
    service: str,
    coordinates: Sequence[str],
    exclusions: Sequence[str] = (),
    boms: Sequence[str] = (),
) -> Path:
    """Copy ``coordinates`` and their runtime dependencies into a cached folder of jars; return it.

    ``boms`` are imported as ``dependencyManagement`` (e.g. a project's parent POM), so transitive
    dependencies get the versions the project itself ships with instead of Maven's nearest-wins pick.

    The folder is only published (renamed into place) once Maven finished, so an interrupted
    download is never mistaken for a complete one: the next run starts that step again, and Maven's
    own local repository (also in the cache) resumes what it had.
    """
    key = [*coordinates, "--", *exclusions, *(["--boms", *boms] if boms else [])]
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:12]
    target = ctx.cache("jars") / f"{service}-{digest}"
    if (target / ".complete").exists():
        return target / "lib"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    deps = "\n".join(_dependency_xml(c, exclusions) for c in coordinates)
    pom = _POM.format(artifact=f"{service}-stack", management=_management_xml(boms), dependencies=deps)
    (partial / "pom.xml").write_text(pom)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError(service, "Maven (mvn) is not installed: apt-get install maven")
    ctx.reporter.phase(service, Phase.DOWNLOAD, f"resolving {', '.join(coordinates)} from Maven Central into {target}")
    argv = [
        mvn,
        "-B",
        "-Dmaven.repo.local=" + str(ctx.cache("m2")),
        "dependency:copy-dependencies",
        "-DoutputDirectory=lib",
        "-DincludeScope=runtime",
    ]
    log_path = partial / "maven.log"
    downloaded = 0
    with log_path.open("w") as log, subprocess.Popen(
        argv, cwd=partial, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "Downloaded from" in line:
                downloaded += 1
                if downloaded % 25 == 0:
                    ctx.reporter.note(service, f"downloaded {downloaded} files...")
        code = proc.wait()
    if code != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise DevstackError(service, f"Maven could not resolve the server's jars (exit {code})", tail)
    ctx.reporter.note(service, f"resolved {len(list((partial / 'lib').glob('*.jar')))} jars ({downloaded} downloads)")
    shutil.rmtree(target, ignore_errors=True)
    (partial / ".complete").write_text("ok\n")
    partial.rename(target)
    return target / "lib"


def classpath(lib: Path, *extra: Path) -> str:
    """A JVM class path of every jar in ``lib`` plus ``extra`` entries."""
    return ":".join([*(str(p) for p in extra), *sorted(str(j) for j in lib.glob("*.jar"))])
