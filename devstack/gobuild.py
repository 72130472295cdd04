"""Building Go servers from the Go module proxy into the shared cache, from small wrapper modules of ours.

Each Go server of the stack has a wrapper module in ``devstack/go/<name>/`` (``go.mod``,
``go.sum`` and a ``tools.go`` or ``main.go``) that requires the upstream module at a published version
and repeats whatever ``replace`` directives upstream needs (which is why ``go install module@version``
cannot build it). :func:`build` compiles one package of that module into
``<cache>/go/bin/<name>-<hash>``, where the hash covers the wrapper module's files, the Go version and
the build flags: a change to any of them builds again, anything else reuses the binary.

The module cache (``GOMODCACHE``) and the build cache (``GOCACHE``) live in the shared cache too, so a
rebuild after a small change, or a second stack on the same machine, only recompiles what changed. The
binary is written to a ``.partial`` file and renamed on success, so an interrupted build is redone and
never used; a file lock keeps two launchers from building the same binary at once.

Only one Go build runs at a time on the machine (:func:`build_slot`, a file lock shared by every thread
and every launcher using this cache): a build keeps every core busy, so two at once finish no sooner
and slow down the services starting beside them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from devstack.base import StackContext
from devstack.errors import DevstackError
from devstack.progress import Phase

#: Wrapper modules, one folder per binary.
MODULES_DIR = Path(__file__).resolve().parent / "go"

#: Smaller, reproducible binaries (no symbol table, no DWARF, no local paths); no cgo, so nothing but
#: the Go toolchain is needed.
BUILD_FLAGS: tuple[str, ...] = ("-trimpath",)
LDFLAGS: tuple[str, ...] = ("-s", "-w")

_GO_FALLBACK = Path("/usr/local/go/bin/go")
_PROGRESS_EVERY = 30.0


def go_executable(service: str) -> str:
    """The ``go`` command: from PATH, else the standard install location."""
    found = shutil.which("go")
    if found:
        return found
    if _GO_FALLBACK.exists():
        return str(_GO_FALLBACK)
    raise DevstackError(service, "the Go toolchain (go) is not installed; see https://go.dev/doc/install")


def go_version(go: str) -> str:
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    return subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True, env=env).stdout.strip()


def module_files(module_dir: Path) -> list[Path]:
    """The wrapper module's files, in a stable order."""
    return sorted(p for p in module_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _ldflags(variables: Mapping[str, str]) -> str:
    return " ".join([*LDFLAGS, *(f"-X {name}={value}" for name, value in sorted(variables.items()))])


def module_digest(
    module_dir: Path,
    package: str,
    go_version_text: str,
    tags: Sequence[str] = (),
    variables: Mapping[str, str] | None = None,
) -> str:
    """Hash of everything that decides what the build produces."""
    digest = hashlib.sha256()
    flags = " ".join([*BUILD_FLAGS, _ldflags(variables or {})])
    for part in (package, go_version_text, flags, ",".join(tags)):
        digest.update(part.encode() + b"\0")
    for path in module_files(module_dir):
        digest.update(str(path.relative_to(module_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_env(ctx: StackContext) -> dict[str, str]:
    """Environment of ``go build``: caches inside the stack cache; GOPROXY is left as the machine has it."""
    go_root = ctx.cache("go")
    return {
        **os.environ,
        "GOMODCACHE": str(go_root / "mod"),
        "GOCACHE": str(go_root / "build"),
        "GOPATH": str(go_root / "path"),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }


@contextlib.contextmanager
def build_slot(ctx: StackContext, service: str) -> Iterator[None]:
    """Hold the machine's one Go build slot; report ``waiting`` while another build holds it.

    A ``flock`` on a file opened here: two threads of one launcher open it separately, so they exclude
    each other as two launchers do.
    """
    with (ctx.cache("go") / "build-slot.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ctx.reporter.phase(service, Phase.WAITING, "for the Go build slot (one build at a time)")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(
    ctx: StackContext,
    service: str,
    name: str,
    package: str,
    *,
    tags: Sequence[str] = (),
    variables: Mapping[str, str] | None = None,
    module_dir: Path | None = None,
) -> Path:
    """The cached binary of ``package`` built from the wrapper module ``go/<name>``, built if missing.

    ``variables`` are string variables set at link time (``-ldflags -X name=value``), such as the
    version a command reports.
    """
    source = module_dir or MODULES_DIR / name
    if not (source / "go.mod").exists():
        raise DevstackError(service, f"no wrapper module at {source} (go.mod missing)")
    go = go_executable(service)
    variables = dict(variables or {})
    digest = module_digest(source, package, go_version(go), tags, variables)
    bin_dir = ctx.cache("go", "bin")
    target = bin_dir / f"{name}-{digest}"
    if target.exists():
        return target
    with _locked(bin_dir / f"{name}.lock"):
        if target.exists():  # built by another launcher while we waited for the lock
            return target
        with build_slot(ctx, service):
            _build(ctx, service, go, source, package, tags, variables, target)
    return target


def _build(
    ctx: StackContext,
    service: str,
    go: str,
    source: Path,
    package: str,
    tags: Sequence[str],
    variables: Mapping[str, str],
    target: Path,
) -> None:
    # Build in a copy of the wrapper module: `-mod=mod` may rewrite go.mod/go.sum, and the repo's copy
    # must stay as committed (it is what the cache key hashes).
    work = ctx.cache("go", "src") / target.name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    log_path = ctx.cache("go", "logs") / f"{target.name}.log"
    argv = [go, "build", "-v", *BUILD_FLAGS, "-ldflags=" + _ldflags(variables)]
    if tags:
        argv.append("-tags=" + ",".join(tags))
    argv += ["-o", str(partial), package]
    label = target.name.rsplit("-", 1)[0] if package == "." else package
    ctx.reporter.phase(service, Phase.BUILD, f"{label} with {go_version(go)} (first time only; log {log_path})")
    started = time.monotonic()
    compiled = 0
    next_note = started + _PROGRESS_EVERY
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            argv, cwd=work, env=build_env(ctx), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        log.write(f"$ {' '.join(argv)}\n")
        for line in proc.stdout:
            log.write(line)
            if not line.startswith(("go: ", "#")) and "/" in line and " " not in line.strip():
                compiled += 1
            now = time.monotonic()
            if now >= next_note:
                log.flush()
                ctx.reporter.note(service, f"still building {label}: {compiled} packages, {now - started:.0f}s")
                next_note = now + _PROGRESS_EVERY
        code = proc.wait()
    elapsed = time.monotonic() - started
    if code != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise DevstackError(service, f"go build of {label} failed (exit {code}) after {elapsed:.0f}s", tail)
    partial.chmod(0o755)
    partial.rename(target)
    shutil.rmtree(work, ignore_errors=True)
    size_mb = target.stat().st_size / 1e6
    ctx.reporter.note(service, f"built {target.name} ({size_mb:.0f} MB) in {elapsed:.0f}s")
    _prune(target)


def _prune(target: Path) -> None:
    """Remove binaries of the same name built from older wrapper modules (a running one keeps its inode)."""
    name = target.name.rsplit("-", 1)[0]
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}")
    for old in target.parent.iterdir():
        if old != target and pattern.fullmatch(old.name):
            old.unlink(missing_ok=True)
