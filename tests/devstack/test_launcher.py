"""The launcher itself (start, status, clash and crash reports, down, cached Maven resolves).

These use throwaway services (a tiny HTTP server, ``sh``, ``sleep``) in a stack of their own under
``tmp_path``, so they need no real broker and never touch the stack under ``.devstack``.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import maven, process, stack
from devstack.__main__ import main
from devstack.base import Service, StackContext
from devstack.errors import DevstackError
from pipeline.config import get_settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HttpEcho(Service):
    """A real (if tiny) server: Python's http.server on a free port; healthy when it answers GET /."""

    name = "http-echo"
    ports = (_free_port(),)
    start_timeout = 30.0

    def install(self, ctx: StackContext) -> None:
        pass

    def command(self, ctx: StackContext) -> list[str]:
        return [sys.executable, "-m", "http.server", str(self.ports[0]), "--bind", "127.0.0.1"]

    def healthy(self, ctx: StackContext) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[0]}/", timeout=2) as response:
            return int(response.status) == 200

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"HTTP_ECHO_URL": f"http://127.0.0.1:{self.ports[0]}"}


class Crasher(Service):
    """Dies during start, after writing to its log."""

    name = "crasher"
    start_timeout = 30.0

    def install(self, ctx: StackContext) -> None:
        pass

    def command(self, ctx: StackContext) -> list[str]:
        return ["sh", "-c", "echo boom; exit 3"]

    def healthy(self, ctx: StackContext) -> bool:
        return False

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {}


class Sleeper(Service):
    """A shell that starts a child of its own (``sleep``) and waits: ``down`` must stop both."""

    name = "sleeper"
    start_timeout = 30.0

    def install(self, ctx: StackContext) -> None:
        pass

    def command(self, ctx: StackContext) -> list[str]:
        return ["sh", "-c", "sleep 300 & echo $! > child.pid.tmp && mv child.pid.tmp child.pid; wait"]

    def child_pid_path(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name) / "child.pid"

    def prepare(self, ctx: StackContext) -> None:
        self.child_pid_path(ctx).unlink(missing_ok=True)

    def healthy(self, ctx: StackContext) -> bool:
        return self.pid(ctx) is not None and self.child_pid_path(ctx).exists()

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {}


class PortUser(Service):
    """Wants a port that the test holds itself; never healthy."""

    name = "port-user"
    start_timeout = 30.0

    def __init__(self, port: int) -> None:
        self.ports = (port,)

    def install(self, ctx: StackContext) -> None:
        pass

    def command(self, ctx: StackContext) -> list[str]:
        return ["sleep", "300"]

    def healthy(self, ctx: StackContext) -> bool:
        return False

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {}


@pytest.fixture
def ctx(tmp_path: Path) -> StackContext:
    return StackContext(cache_dir=tmp_path / "cache", home=tmp_path / "home")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the throwaway services known to ``stack`` (and so to the CLI) for one test."""
    for cls in (HttpEcho, Crasher, Sleeper):
        monkeypatch.setitem(stack.SERVICES, cls.name, f"{__name__}:{cls.__name__}")


@pytest.fixture
def cli_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered: None) -> Iterator[StackContext]:
    """The CLI's own settings pointed at a stack under ``tmp_path``."""
    monkeypatch.setenv("DEVSTACK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEVSTACK_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    try:
        yield stack.context(get_settings())
    finally:
        get_settings.cache_clear()


def test_status_reports_a_started_service_healthy_with_its_pid(
    cli_stack: StackContext, capsys: pytest.CaptureFixture[str]
) -> None:
    port = HttpEcho.ports[0]
    try:
        assert main(["up", "http-echo"]) == 0
        capsys.readouterr()
        assert main(["status", "http-echo"]) == 0
        rows = json.loads(capsys.readouterr().out)
        pid = HttpEcho().pid(cli_stack)
        assert pid is not None
        assert rows == [
            {
                "service": "http-echo",
                "address": f"127.0.0.1:{port}",
                "pid": pid,
                "healthy": True,
                "started_here": True,
                "log": str(cli_stack.log_path("http-echo")),
            }
        ]
        assert "http.server" in Path(f"/proc/{pid}/cmdline").read_text()
        assert main(["env", "http-echo"]) == 0
        assert capsys.readouterr().out == f"export HTTP_ECHO_URL=http://127.0.0.1:{port}\n"
    finally:
        assert main(["down", "http-echo"]) == 0
    assert not process.pid_alive(pid)
    assert main(["status", "http-echo"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["pid"], row["healthy"], row["started_here"]) == (None, False, False)


def test_a_taken_port_gives_a_clear_error_naming_the_port(ctx: StackContext) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        service = PortUser(port)
        with pytest.raises(DevstackError) as caught:
            service.start(ctx)
    message = str(caught.value)
    assert str(port) in message
    assert "port-user" in message
    assert "taken by another process" in message
    assert not ctx.pid_path("port-user").exists(), "nothing may be started on a clash"


def test_a_service_that_dies_during_start_reports_its_log_tail(ctx: StackContext) -> None:
    with pytest.raises(DevstackError) as caught:
        Crasher().start(ctx)
    assert "exited during start" in str(caught.value)
    assert "boom" in caught.value.log_tail
    assert "boom" in str(caught.value)


def test_the_cli_exits_non_zero_with_the_log_tail(cli_stack: StackContext, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "crasher"]) == 1
    err = capsys.readouterr().err
    assert "[crasher] the server exited during start" in err
    assert "boom" in err


def test_down_leaves_no_process(ctx: StackContext, registered: None) -> None:
    service = Sleeper()
    stack.up(ctx, ["sleeper"])
    shell = service.pid(ctx)
    assert shell is not None
    child = int(service.child_pid_path(ctx).read_text())
    assert process.pid_alive(shell) and process.pid_alive(child)

    assert stack.down(ctx, ["sleeper"]) == ["sleeper"]

    assert not process.pid_alive(shell)
    assert not process.pid_alive(child)
    assert not ctx.pid_path("sleeper").exists()
    assert stack.down(ctx, ["sleeper"]) == [], "a second down has nothing left to stop"


@pytest.fixture
def maven_ctx(tmp_path: Path) -> StackContext:
    """A cache of its own for the published jar folders, sharing Maven's local repository (plugins)."""
    shared_m2 = get_settings().devstack_cache_dir / "m2"
    shared_m2.mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "m2").symlink_to(shared_m2, target_is_directory=True)
    return StackContext(cache_dir=cache, home=tmp_path / "home")


@pytest.mark.integration
def test_an_interrupted_maven_resolve_is_not_used_and_is_redone(
    maven_ctx: StackContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinates = ["org.slf4j:slf4j-api:2.0.16"]
    lib = maven.resolve_classpath(maven_ctx, "tiny", coordinates)
    target = lib.parent
    assert (target / ".complete").exists()
    assert sorted(p.name for p in lib.glob("*.jar")) == ["slf4j-api-2.0.16.jar"]

    # Killed half-way: the published folder lost its completion mark (its jar truncated), and the
    # unpublished .partial folder of the interrupted run is still there. Neither may be used.
    (target / ".complete").unlink()
    (lib / "slf4j-api-2.0.16.jar").write_bytes(b"truncated")
    partial = target.with_name(target.name + ".partial")
    (partial / "lib").mkdir(parents=True)
    (partial / "lib" / "slf4j-api-2.0.16.jar").write_bytes(b"truncated")
    (partial / "lib" / "stray.jar").write_bytes(b"truncated")

    assert maven.resolve_classpath(maven_ctx, "tiny", coordinates) == lib
    assert not partial.exists()
    assert (target / ".complete").exists()
    assert sorted(p.name for p in lib.glob("*.jar")) == ["slf4j-api-2.0.16.jar"]
    assert zipfile.is_zipfile(lib / "slf4j-api-2.0.16.jar")

    # A complete folder is reused as is: Maven is not even looked for.
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert maven.resolve_classpath(maven_ctx, "tiny", coordinates) == lib


@pytest.mark.integration
def test_a_bom_sets_the_versions_of_transitive_jars(maven_ctx: StackContext) -> None:
    coordinates = ["org.slf4j:slf4j-simple:2.0.16"]
    plain = maven.resolve_classpath(maven_ctx, "tiny", coordinates)
    managed = maven.resolve_classpath(maven_ctx, "tiny", coordinates, boms=["org.slf4j:slf4j-bom:2.0.17"])
    assert plain != managed
    assert sorted(p.name for p in plain.glob("*.jar")) == ["slf4j-api-2.0.16.jar", "slf4j-simple-2.0.16.jar"]
    assert sorted(p.name for p in managed.glob("*.jar")) == ["slf4j-api-2.0.17.jar", "slf4j-simple-2.0.16.jar"]
