"""What the launcher tells its user while a stack comes up: each service's phase, from one reporter.

Services never print: they report a :class:`Phase` change (``reporter.phase``) or a passing remark
(``reporter.note``, e.g. how many packages a build compiled so far) to the :class:`Reporter` their
``StackContext`` carries. Three reporters:

* :class:`LineReporter`, the default: one ``[devstack:<service>] ...`` line per report on stderr, what a
  single service started by a test fixture or a benchmark has always printed;
* :class:`PlainDisplay`: one line per phase change, for a stack brought up with no terminal to draw on
  (a log file, CI);
* :class:`LiveDisplay`: one line per service, redrawn in place with ``rich``, for a terminal.

The last two share :class:`StackProgress`, the state they render, so what they show is the same.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

Clock = Callable[[], float]


class Phase(StrEnum):
    QUEUED = "queued"
    DOWNLOAD = "download"
    BUILD = "build"
    #: For a dependency, a start slot or the Go build slot: the detail says which ("for etcd").
    WAITING = "waiting"
    START = "start"
    HEALTHY = "healthy"
    FAILED = "failed"


#: Phases after which nothing more happens to a service in this run.
FINAL = frozenset({Phase.HEALTHY, Phase.FAILED})


class Reporter(Protocol):
    def phase(self, service: str, phase: Phase, detail: str = "") -> None:
        """``service`` entered ``phase``; ``detail`` says what it is doing (or waiting for) in it."""

    def note(self, service: str, message: str) -> None:
        """A remark within the current phase (progress of a download or build)."""


def label(phase: Phase, detail: str) -> str:
    """How a phase reads to a user: ``waiting for etcd``, ``download (resolving ... from Maven Central)``."""
    if phase is Phase.WAITING:
        return f"waiting {detail}".rstrip()
    return f"{phase.value} ({detail})" if detail else phase.value


class LineReporter:
    """Every report as one line on ``stream`` (stderr by default, so ``env`` output stays clean)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def _write(self, service: str, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            stream.write(f"[devstack:{service}] {text}\n")
            stream.flush()

    def phase(self, service: str, phase: Phase, detail: str = "") -> None:
        if phase is not Phase.QUEUED:
            self._write(service, label(phase, detail))

    def note(self, service: str, message: str) -> None:
        self._write(service, message)


@dataclass
class ServiceProgress:
    phase: Phase
    detail: str
    #: When the service's first phase after ``queued`` began (its work started); None while queued.
    began: float | None
    #: When it reached a final phase.
    ended: float | None = None

    def elapsed(self, now: float) -> float:
        if self.began is None:
            return 0.0
        return (self.ended if self.ended is not None else now) - self.began


class StackProgress:
    """The phase of every service of one ``up``; thread-safe, since services come up in threads of their own."""

    def __init__(self, services: Iterable[str], clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self.services: dict[str, ServiceProgress] = {
            name: ServiceProgress(Phase.QUEUED, "", None) for name in services
        }

    def update(self, service: str, phase: Phase, detail: str) -> bool:
        """Record a report; True if it changed the service's phase or what it waits for."""
        now = self.clock()
        with self._lock:
            current = self.services.get(service)
            if current is None:
                current = self.services[service] = ServiceProgress(Phase.QUEUED, "", None)
            changed = phase is not current.phase or (phase is Phase.WAITING and detail != current.detail)
            current.phase, current.detail = phase, detail
            if phase is not Phase.QUEUED and current.began is None:
                current.began = now
            current.ended = now if phase in FINAL else None
            return changed

    def note(self, service: str, message: str) -> None:
        with self._lock:
            current = self.services.get(service)
            if current is not None and current.phase not in FINAL:
                current.detail = message

    def snapshot(self) -> list[tuple[str, ServiceProgress]]:
        with self._lock:
            return [(name, ServiceProgress(p.phase, p.detail, p.began, p.ended)) for name, p in self.services.items()]

    def summary(self) -> str:
        rows = self.snapshot()
        healthy = [name for name, p in rows if p.phase is Phase.HEALTHY]
        failed = [name for name, p in rows if p.phase is Phase.FAILED]
        text = f"{len(healthy)} of {len(rows)} services healthy after {self.clock() - self.started:.1f}s"
        return text + (f"; failed: {', '.join(failed)}" if failed else "")


class PlainDisplay:
    """One line per phase change (notes are left out): readable in a log file, one event per line."""

    def __init__(self, services: Iterable[str], stream: TextIO, clock: Clock = time.monotonic) -> None:
        self.state = StackProgress(services, clock)
        self._stream = stream
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock:
            self._stream.write(f"[devstack +{self.state.clock() - self.state.started:.1f}s] {text}\n")
            self._stream.flush()

    def phase(self, service: str, phase: Phase, detail: str = "") -> None:
        if self.state.update(service, phase, detail) and phase is not Phase.QUEUED:
            self._line(f"{service}: {label(phase, detail)}")

    def note(self, service: str, message: str) -> None:
        self.state.note(service, message)

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._line(self.state.summary())


_STYLES: dict[Phase, str] = {
    Phase.QUEUED: "dim",
    Phase.DOWNLOAD: "cyan",
    Phase.BUILD: "magenta",
    Phase.WAITING: "yellow",
    Phase.START: "blue",
    Phase.HEALTHY: "green",
    Phase.FAILED: "bold red",
}


class LiveDisplay:
    """One line per service (phase, elapsed time, what it is doing), redrawn in place on a terminal."""

    def __init__(self, services: Iterable[str], console: Console, clock: Clock = time.monotonic) -> None:
        self.state = StackProgress(services, clock)
        self._console = console
        self._live = Live(console=console, get_renderable=self.render, refresh_per_second=4, transient=False)

    def render(self) -> Table:
        now = self.state.clock()
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column(no_wrap=True)
        for name, progress in self.state.snapshot():
            phase = label(progress.phase, progress.detail if progress.phase is Phase.WAITING else "")
            detail = "" if progress.phase is Phase.WAITING else progress.detail
            table.add_row(
                Text(name, style="bold"),
                Text(phase, style=_STYLES[progress.phase]),
                Text(f"{progress.elapsed(now):6.1f}s", style="dim"),
                Text(detail, overflow="ellipsis"),
            )
        return table

    def phase(self, service: str, phase: Phase, detail: str = "") -> None:
        self.state.update(service, phase, detail)

    def note(self, service: str, message: str) -> None:
        self.state.note(service, message)

    def __enter__(self) -> LiveDisplay:
        self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._live.stop()
        self._console.print(self.state.summary())


def display(services: Iterable[str], stream: TextIO | None = None) -> PlainDisplay | LiveDisplay:
    """The live display on a terminal, plain lines anywhere else (a log file, a pipe)."""
    target = stream if stream is not None else sys.stderr
    if target.isatty():
        return LiveDisplay(services, Console(file=target))
    return PlainDisplay(services, target)
