"""What every local service is: how to install it, start it, check it really answers, and point at it."""

from __future__ import annotations

import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack import process
from devstack.errors import DevstackError
from devstack.progress import LineReporter, Phase, Reporter

logger = logging.getLogger(__name__)

JAVA17_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")
JAVA25_HOME = Path("/usr/lib/jvm/temurin-25-jdk-amd64")


def progress(service: str, message: str) -> None:
    """One progress line for the user of a test harness (stderr, so `env` output stays clean).

    The services themselves report to ``ctx.reporter`` (:mod:`devstack.progress`) instead.
    """
    sys.stderr.write(f"[devstack:{service}] {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class StackContext:
    """Where a stack keeps its cached installs (shared by every clone) and its state (per stack)."""

    cache_dir: Path
    home: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Where the services report their phases; ``stack.up`` puts its display here.
    reporter: Reporter = field(default_factory=LineReporter, compare=False, repr=False)

    def service_dir(self, name: str) -> Path:
        path = self.home / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def data_dir(self, name: str) -> Path:
        path = self.service_dir(name) / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_path(self, name: str) -> Path:
        return self.service_dir(name) / "service.log"

    def pid_path(self, name: str) -> Path:
        return self.service_dir(name) / "service.pid"

    def cache(self, *parts: str) -> Path:
        path = self.cache_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


class Service(ABC):
    """One local server. Subclasses say how to install, start and health-check it."""

    name: str
    #: Ports the service binds on 127.0.0.1; a clash with a foreign process is reported before start.
    ports: tuple[int, ...] = ()
    #: Services that must be healthy before this one starts.
    depends_on: tuple[str, ...] = ()
    start_timeout: float = 120.0

    @abstractmethod
    def install(self, ctx: StackContext) -> None:
        """Download or build what is missing into ``ctx.cache_dir``; idempotent."""

    @abstractmethod
    def command(self, ctx: StackContext) -> list[str]:
        """The command line that runs the server in the foreground."""

    def prepare(self, ctx: StackContext) -> None:  # noqa: B027 - optional hook
        """Write config files, format storage...: runs before every start."""

    def process_env(self, ctx: StackContext) -> dict[str, str]:
        """Environment of the server process."""
        return {**os.environ, **ctx.extra_env}

    @abstractmethod
    def healthy(self, ctx: StackContext) -> bool:
        """True when the server really answers requests (not only a listening port)."""

    @abstractmethod
    def exports(self, ctx: StackContext) -> dict[str, str]:
        """Environment variables (the README's names) that point the service at this server."""

    def address(self, ctx: StackContext) -> str:
        return ", ".join(f"127.0.0.1:{port}" for port in self.ports)

    # -- lifecycle, shared by every service ---------------------------------------------------------

    def pid(self, ctx: StackContext) -> int | None:
        return process.read_pid(ctx.pid_path(self.name))

    def safe_healthy(self, ctx: StackContext) -> bool:
        try:
            return self.healthy(ctx)
        except Exception:  # a health probe that fails in any way means "not healthy yet"
            logger.debug("health probe of %s failed", self.name, exc_info=True)
            return False

    def start(self, ctx: StackContext) -> None:
        """Start the server unless it already answers; wait until it is healthy."""
        if self.safe_healthy(ctx):
            ctx.reporter.phase(self.name, Phase.HEALTHY, f"already up at {self.address(ctx)}")
            return
        running = self.pid(ctx)
        if running is None:
            clashes = [port for port in self.ports if process.port_in_use(port)]
            if clashes:
                raise DevstackError(
                    self.name,
                    f"port(s) {clashes} on 127.0.0.1 are taken by another process that is not a healthy "
                    f"{self.name}; stop it or free the port(s)",
                )
            self.prepare(ctx)
            argv = self.command(ctx)
            running = process.spawn(
                argv,
                log_path=ctx.log_path(self.name),
                pid_path=ctx.pid_path(self.name),
                cwd=ctx.service_dir(self.name),
                env=self.process_env(ctx),
            )
            ctx.reporter.phase(self.name, Phase.START, f"pid {running}, log {ctx.log_path(self.name)}")
        else:
            ctx.reporter.phase(self.name, Phase.START, f"already running as pid {running}")
        self.wait_healthy(ctx, running)

    def wait_healthy(self, ctx: StackContext, pid: int) -> None:
        started = time.monotonic()
        next_note = started + 5
        while True:
            if self.safe_healthy(ctx):
                ctx.reporter.phase(
                    self.name, Phase.HEALTHY, f"after {time.monotonic() - started:.1f}s at {self.address(ctx)}"
                )
                return
            if not process.pid_alive(pid):
                raise DevstackError(
                    self.name, "the server exited during start", process.log_tail(ctx.log_path(self.name))
                )
            now = time.monotonic()
            if now - started > self.start_timeout:
                raise DevstackError(
                    self.name,
                    f"not healthy after {self.start_timeout:.0f}s (still running as pid {pid})",
                    process.log_tail(ctx.log_path(self.name)),
                )
            if now >= next_note:
                ctx.reporter.note(self.name, f"waiting for it to answer... {now - started:.0f}s")
                next_note = now + 5
            time.sleep(0.5)

    def stop(self, ctx: StackContext) -> bool:
        """Stop the server this stack started (by pid); True if one was running."""
        pid = self.pid(ctx)
        if pid is None:
            return False
        ctx.reporter.note(self.name, f"stopping pid {pid}")
        process.stop(pid)
        ctx.pid_path(self.name).unlink(missing_ok=True)
        return True


class PythonModuleService(Service):
    """A server of this package run with the project's Python (``python -m module``): nothing to install."""

    #: The checkout that holds the ``devstack`` and ``pipeline`` packages, put on the server's PYTHONPATH.
    source_root = Path(__file__).resolve().parents[1]

    def install(self, ctx: StackContext) -> None:
        """Nothing to install: the server is part of this package and runs on the project's venv."""

    def process_env(self, ctx: StackContext) -> dict[str, str]:
        env = super().process_env(ctx)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.source_root), env.get("PYTHONPATH", "")) if p)
        return env
