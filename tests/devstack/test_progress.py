"""The stack's progress display: plain lines (one per phase change) off a terminal, one live line per service on it."""

from __future__ import annotations

import io

from rich.console import Console

from devstack import progress
from devstack.progress import LineReporter, LiveDisplay, Phase, PlainDisplay


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_mode_prints_one_line_per_phase_change_and_a_summary() -> None:
    out, clock = io.StringIO(), Clock()
    with PlainDisplay(["etcd", "kubernetes", "s3"], out, clock) as shown:
        for service in ("etcd", "kubernetes", "s3"):
            shown.phase(service, Phase.QUEUED)
        shown.phase("etcd", Phase.BUILD, "etcd with go1.26 (first time only)")
        shown.note("etcd", "still building etcd: 120 packages, 30s")  # a note is no phase change
        shown.phase("kubernetes", Phase.WAITING, "for the Go build slot (one build at a time)")
        clock.now += 61.25
        shown.phase("etcd", Phase.START, "pid 10, log etcd.log")
        shown.phase("kubernetes", Phase.WAITING, "for etcd")  # still waiting, but for something else: a line
        shown.phase("kubernetes", Phase.WAITING, "for etcd")  # the same again: none
        clock.now += 2
        shown.phase("etcd", Phase.HEALTHY, "after 2.0s at 127.0.0.1:2379")
        shown.phase("s3", Phase.FAILED, "[s3] go build of weed failed (exit 1) after 3s")
    assert out.getvalue().splitlines() == [
        "[devstack +0.0s] etcd: build (etcd with go1.26 (first time only))",
        "[devstack +0.0s] kubernetes: waiting for the Go build slot (one build at a time)",
        "[devstack +61.2s] etcd: start (pid 10, log etcd.log)",
        "[devstack +61.2s] kubernetes: waiting for etcd",
        "[devstack +63.2s] etcd: healthy (after 2.0s at 127.0.0.1:2379)",
        "[devstack +63.2s] s3: failed ([s3] go build of weed failed (exit 1) after 3s)",
        "[devstack +63.2s] 1 of 3 services healthy after 63.2s; failed: s3",
    ]


def test_a_service_s_elapsed_time_runs_from_its_first_phase_to_its_last() -> None:
    clock = Clock()
    state = progress.StackProgress(["kafka", "pulsar"], clock)
    clock.now += 5  # queued time is not the service's time
    state.update("kafka", Phase.DOWNLOAD, "resolving")
    clock.now += 10
    state.update("kafka", Phase.HEALTHY, "")
    clock.now += 100
    [(_, kafka), (_, pulsar)] = state.snapshot()
    assert kafka.elapsed(clock.now) == 10.0
    assert pulsar.elapsed(clock.now) == 0.0


def test_the_live_display_has_one_line_per_service_with_its_phase_and_time() -> None:
    clock = Clock()
    shown = LiveDisplay(["etcd", "kubernetes", "kafka"], Console(file=io.StringIO()), clock)
    shown.phase("etcd", Phase.BUILD, "etcd with go1.26")
    shown.note("etcd", "still building etcd: 120 packages, 30s")
    shown.phase("kubernetes", Phase.WAITING, "for etcd")
    clock.now += 12
    out = io.StringIO()
    Console(file=out, width=120).print(shown.render())
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    etcd, kubernetes, kafka = (line.split() for line in lines)
    assert etcd[:3] == ["etcd", "build", "12.0s"]
    assert " ".join(etcd[3:]) == "still building etcd: 120 packages, 30s"
    assert kubernetes == ["kubernetes", "waiting", "for", "etcd", "12.0s"]
    assert kafka == ["kafka", "queued", "0.0s"]


def test_the_display_is_live_on_a_terminal_and_plain_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress.display(["kafka"], io.StringIO()), PlainDisplay)
    assert isinstance(progress.display(["kafka"], Terminal()), LiveDisplay)


def test_the_default_reporter_prints_every_report_but_queued() -> None:
    out = io.StringIO()
    reporter = LineReporter(out)
    reporter.phase("kafka", Phase.QUEUED)
    reporter.phase("kafka", Phase.DOWNLOAD, "resolving org.apache.kafka:kafka_2.13:4.1.1")
    reporter.note("kafka", "downloaded 25 files...")
    reporter.phase("kafka", Phase.HEALTHY)
    assert out.getvalue().splitlines() == [
        "[devstack:kafka] download (resolving org.apache.kafka:kafka_2.13:4.1.1)",
        "[devstack:kafka] downloaded 25 files...",
        "[devstack:kafka] healthy",
    ]
