"""``python -m devstack doctor``: check this machine before anything long starts.

The local stack builds and runs servers with Python, two JDKs (17 for Kafka, Cassandra and Ignite; 21 or
newer for Pulsar and Elasticsearch), Maven and Go, needs disk for their downloads and builds, and binds fixed
ports on 127.0.0.1. Each check answers with one sentence; a problem is a sentence that says what to do, never a
traceback. The parsers are plain functions so the tests can feed them any tool's output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack import process, stack
from devstack.base import JAVA17_HOME, JAVA25_HOME, StackContext

MIN_PYTHON = (3, 11)
#: Cold caches take about 6 GiB (Maven and Go downloads, the Go builds, the servers' data); ask for some margin.
MIN_FREE_BYTES = 8 * 1024**3
GO_MODULES = Path(__file__).parent / "go"


@dataclass(frozen=True)
class Finding:
    """The answer of one check: ``ok`` or not, and one sentence for a human."""

    check: str
    ok: bool
    sentence: str


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``"17.0.15"`` → 17, legacy ``"1.8.0_392"`` → 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def go_version(version_output: str) -> tuple[int, int] | None:
    """``go version go1.26.8 linux/amd64`` → (1, 26)."""
    match = re.search(r"\bgo(\d+)\.(\d+)", version_output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def go_directive(go_mod: str) -> tuple[int, int] | None:
    """The ``go 1.26.0`` line of a go.mod → (1, 26)."""
    match = re.search(r"^go\s+(\d+)\.(\d+)", go_mod, re.MULTILINE)
    return (int(match.group(1)), int(match.group(2))) if match else None


def required_go(go_mods: Iterable[str]) -> tuple[int, int] | None:
    """The newest Go any of the stack's Go builds asks for."""
    versions = [v for v in (go_directive(text) for text in go_mods) if v is not None]
    return max(versions) if versions else None


def check_python(version: Sequence[int]) -> Finding:
    found = ".".join(str(part) for part in version[:3])
    if tuple(version[:2]) >= MIN_PYTHON:
        return Finding("python", True, f"Python {found}.")
    return Finding("python", False, f"Python {found} is too old: install Python 3.11 or newer and re-run make.")


def check_jdk(label: str, home: Path, version_output: str | None, minimum: int, maximum: int | None) -> Finding:
    wanted = f"JDK {minimum}" if maximum == minimum else f"JDK {minimum} or newer"
    if version_output is None:
        return Finding(label, False, f"No {wanted} at {home}: install it there ({label} needs it).")
    major = java_major(version_output)
    if major is None or major < minimum or (maximum is not None and major > maximum):
        return Finding(label, False, f"The JDK at {home} is version {major}; the stack needs {wanted} there.")
    return Finding(label, True, f"JDK {major} at {home}.")


def check_go(version_output: str | None, needed: tuple[int, int] | None) -> Finding:
    if version_output is None:
        return Finding(
            "go", False, "Go is not on PATH: install Go (the stack builds etcd, kube-apiserver and SeaweedFS)."
        )
    found = go_version(version_output)
    if found is None:
        return Finding("go", False, f"Cannot read Go's version from {version_output.strip()!r}.")
    if needed is not None and found < needed:
        return Finding(
            "go", False, f"Go {found[0]}.{found[1]} is too old: the stack's Go builds need Go {needed[0]}.{needed[1]}."
        )
    return Finding("go", True, f"Go {found[0]}.{found[1]}.")


def check_tool(name: str, path: str | None, why: str) -> Finding:
    if path is None:
        return Finding(name, False, f"{name} is not on PATH: install it ({why}).")
    return Finding(name, True, f"{name} at {path}.")


def check_disk(where: Path, free_bytes: int, minimum: int = MIN_FREE_BYTES) -> Finding:
    gib = free_bytes / 1024**3
    if free_bytes < minimum:
        return Finding(
            "disk", False,
            f"Only {gib:.1f} GiB free at {where}; the stack's downloads and builds need about "
            f"{minimum / 1024**3:.0f} GiB: free some space or set DEVSTACK_CACHE_DIR elsewhere.",
        )
    return Finding("disk", True, f"{gib:.1f} GiB free at {where}.")


def check_ports(claims: Iterable[tuple[str, int, bool, bool]]) -> Finding:
    """``claims``: (service, port, port in use, the service's own process is alive)."""
    foreign = [f"{port} ({service})" for service, port, in_use, ours in claims if in_use and not ours]
    if foreign:
        return Finding(
            "ports", False,
            f"Port(s) {', '.join(foreign)} on 127.0.0.1 are taken by another program: stop it before make run.",
        )
    return Finding("ports", True, "The stack's ports are free or held by its own servers.")


# -- probing this machine -------------------------------------------------------------------------------------


def _run(argv: Sequence[str]) -> str | None:
    """Combined output of a short command, or None when it cannot run."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout + done.stderr) if done.returncode == 0 else None


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _port_claims(ctx: StackContext) -> list[tuple[str, int, bool, bool]]:
    claims: list[tuple[str, int, bool, bool]] = []
    for name in stack.SERVICES:
        service = stack.load(name)
        pid = process.read_pid(ctx.pid_path(name)) if (ctx.home / name).exists() else None
        in_use = [port for port in service.ports if process.port_in_use(port)]
        # a healthy server of another stack is fine too: ``up`` reuses it
        ours = bool(in_use) and ((pid is not None and process.pid_alive(pid)) or service.safe_healthy(ctx))
        claims.extend((name, port, port in in_use, ours) for port in service.ports)
    return claims


def examine(ctx: StackContext, run: Callable[[Sequence[str]], str | None] = _run) -> list[Finding]:
    """Every check, on this machine."""
    go_mods = [p.read_text() for p in sorted(GO_MODULES.glob("*/go.mod"))]
    disk_root = _existing_parent(ctx.cache_dir)
    return [
        check_python(tuple(sys.version_info[:3])),
        check_jdk("JDK 17", JAVA17_HOME, run([str(JAVA17_HOME / "bin" / "java"), "-version"]), 17, 17),
        check_jdk("JDK 21+", JAVA25_HOME, run([str(JAVA25_HOME / "bin" / "java"), "-version"]), 21, None),
        check_tool("mvn", shutil.which("mvn"), "the stack resolves the Java servers from Maven Central with it"),
        check_go(run(["go", "version"]) if shutil.which("go") else None, required_go(go_mods)),
        check_disk(disk_root, shutil.disk_usage(disk_root).free),
        check_ports(_port_claims(ctx)),
    ]


def report(findings: Sequence[Finding]) -> str:
    return "\n".join(f"{'ok     ' if f.ok else 'PROBLEM'}  {f.check:8} {f.sentence}" for f in findings)
