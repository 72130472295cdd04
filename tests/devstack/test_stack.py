"""``stack.up``'s scheduler on fake services: dependency order, real concurrency, one Go build at a time, every
failure reported while the others come up, and the core / background split of ``make run``.

Nothing here starts a server: the fake services record what the scheduler made them do. Where a test needs two
things to overlap (or not), it synchronises on events and barriers with generous timeouts instead of sleeping,
so a correct scheduler always passes and a serial (or unserialised) one always fails.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack import gobuild, process, stack
from devstack.__main__ import main
from devstack.base import Service, StackContext
from devstack.errors import DevstackError, StackUpError
from devstack.progress import Phase
from pipeline.config import get_settings

TIMEOUT = 60.0


class Recorder:
    """A reporter that keeps every report and lets a test wait for one."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, Phase, str]] = []
        self.notes: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._watches: list[tuple[Callable[[str, Phase, str], bool], threading.Event]] = []

    def phase(self, service: str, phase: Phase, detail: str = "") -> None:
        with self._lock:
            self.reports.append((service, phase, detail))
            for matches, event in self._watches:
                if matches(service, phase, detail):
                    event.set()

    def note(self, service: str, message: str) -> None:
        with self._lock:
            self.notes.append((service, message))

    def when(self, matches: Callable[[str, Phase, str], bool]) -> threading.Event:
        """An event set once a report matching ``matches`` arrives."""
        event = threading.Event()
        with self._lock:
            self._watches.append((matches, event))
        return event

    def last_phase(self, service: str) -> Phase:
        return [phase for name, phase, _ in self.reports if name == service][-1]


def waited(event: threading.Event, what: str) -> None:
    if not event.wait(TIMEOUT):
        raise DevstackError("test", f"gave up waiting for {what}")


class Fake(Service):
    """A service whose install and start are test code; ``start`` reports like the real one."""

    def __init__(
        self,
        name: str,
        log: list[str],
        *,
        depends_on: tuple[str, ...] = (),
        on_install: Callable[[StackContext], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.depends_on = depends_on
        self.log = log
        self.on_install = on_install
        self.on_start = on_start

    def install(self, ctx: StackContext) -> None:
        if self.on_install is not None:
            self.on_install(ctx)

    def start(self, ctx: StackContext) -> None:
        ctx.reporter.phase(self.name, Phase.START)
        self.log.append(f"{self.name}:start")
        if self.on_start is not None:
            self.on_start()
        self.log.append(f"{self.name}:healthy")
        ctx.reporter.phase(self.name, Phase.HEALTHY)

    def command(self, ctx: StackContext) -> list[str]:
        return ["true"]

    def healthy(self, ctx: StackContext) -> bool:
        return f"{self.name}:healthy" in self.log

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {}


@pytest.fixture
def ctx(tmp_path: Path) -> StackContext:
    return StackContext(cache_dir=tmp_path / "cache", home=tmp_path / "home")


def test_a_service_starts_only_once_its_dependency_is_healthy(ctx: StackContext) -> None:
    log: list[str] = []
    reporter = Recorder()
    child_waits = reporter.when(lambda s, p, d: (s, p, d) == ("child", Phase.WAITING, "for parent"))
    # The parent finishes its start only once the child said it waits for it: a scheduler that started the
    # child anyway would log the child's start before the parent's health.
    parent = Fake("parent", log, on_start=lambda: waited(child_waits, "the child to wait"))
    child = Fake("child", log, depends_on=("parent",))

    started = stack.bring_up(ctx, [child, parent], reporter, start_slots=4)

    assert [s.name for s in started] == ["child", "parent"]
    assert log == ["parent:start", "parent:healthy", "child:start", "child:healthy"]
    assert reporter.last_phase("child") is Phase.HEALTHY


def test_independent_services_install_and_start_at_the_same_time(ctx: StackContext) -> None:
    log: list[str] = []
    # Each barrier opens only when every party reached it: one service at a time would break it (and fail).
    installs = threading.Barrier(3, timeout=TIMEOUT)
    starts = threading.Barrier(2, timeout=TIMEOUT)
    services = [
        Fake("one", log, on_install=lambda _ctx: installs.wait(), on_start=starts.wait),
        Fake("two", log, on_install=lambda _ctx: installs.wait(), on_start=starts.wait),
        Fake("three", log, on_install=lambda _ctx: installs.wait(), depends_on=("one", "two")),
    ]

    stack.bring_up(ctx, services, Recorder(), start_slots=2)

    assert sorted(log[:2]) == ["one:start", "two:start"]
    assert log[-2:] == ["three:start", "three:healthy"]


def test_no_more_servers_start_at_once_than_there_are_start_slots(ctx: StackContext) -> None:
    log: list[str] = []
    reporter = Recorder()
    others_wait = [
        reporter.when(lambda s, p, d, name=name: s == name and p is Phase.WAITING and "start slot" in d)
        for name in ("a", "b", "c")
    ]
    active: list[str] = []
    most = [0]
    first = threading.Lock()

    def starting(name: str) -> Callable[[], None]:
        def start() -> None:
            active.append(name)
            most[0] = max(most[0], len(active))
            if first.acquire(blocking=False):  # the first to start holds the only slot until both others wait
                for other, event in zip("abc", others_wait, strict=True):
                    if other != name:
                        waited(event, f"{other} to wait for a start slot")
            active.remove(name)

        return start

    stack.bring_up(ctx, [Fake(n, log, on_start=starting(n)) for n in "abc"], reporter, start_slots=1)

    assert most[0] == 1
    assert sorted(entry for entry in log if entry.endswith(":healthy")) == ["a:healthy", "b:healthy", "c:healthy"]


def test_go_builds_run_one_at_a_time_while_other_installs_go_on(
    ctx: StackContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reporter = Recorder()
    slot_waits = {
        name: reporter.when(lambda s, p, d, name=name: s == name and p is Phase.WAITING and "Go build slot" in d)
        for name in ("etcd-like", "seaweed-like")
    }
    building: list[str] = []
    most = [0]
    other_install = threading.Event()

    def fake_build(
        ctx: StackContext, service: str, go: str, source: Path, package: str, tags: object, variables: object,
        target: Path,
    ) -> None:
        building.append(service)
        most[0] = max(most[0], len(building))
        if len(slot_waits) == 2:  # the first build: hold the slot until the other build waits for it
            other = next(name for name in slot_waits if name != service)
            waited(slot_waits.pop(other), f"{other} to wait for the Go build slot")
            # ...and a download (no Go build) still made progress meanwhile.
            waited(other_install, "the other install to run")
        target.write_text("binary")
        building.remove(service)

    monkeypatch.setattr(gobuild, "go_executable", lambda service: "go")
    monkeypatch.setattr(gobuild, "go_version", lambda go: "go1.0-test")
    monkeypatch.setattr(gobuild, "_build", fake_build)

    def go_install(name: str) -> Callable[[StackContext], None]:
        module = tmp_path / "modules" / name
        module.mkdir(parents=True)
        (module / "go.mod").write_text(f"module example.com/{name}\n")

        def install(ctx: StackContext) -> None:
            assert gobuild.build(ctx, name, name, ".", module_dir=module).read_text() == "binary"

        return install

    log: list[str] = []
    services = [
        Fake("etcd-like", log, on_install=go_install("etcd-like")),
        Fake("seaweed-like", log, on_install=go_install("seaweed-like")),
        Fake("download", log, on_install=lambda _ctx: other_install.set()),
    ]

    stack.bring_up(ctx, services, reporter, start_slots=3)

    assert most[0] == 1
    slot_reports = [name for name, phase, detail in reporter.reports if "Go build slot" in detail]
    assert len(slot_reports) == 1, "the second build waited for the first, the first for nothing"
    assert sorted(e for e in log if e.endswith(":healthy")) == ["download:healthy", "etcd-like:healthy",
                                                                 "seaweed-like:healthy"]


def test_every_failure_is_reported_with_its_log_tail_while_the_others_come_up(ctx: StackContext) -> None:
    log: list[str] = []
    reporter = Recorder()

    def broken(_ctx: StackContext) -> None:
        raise DevstackError("broken", "Maven could not resolve the server's jars (exit 1)", "ERROR no route to host")

    def buggy(_ctx: StackContext) -> None:
        raise OSError("disk full")

    services = [
        Fake("broken", log, on_install=broken),
        Fake("dependent", log, depends_on=("broken",)),
        Fake("buggy", log, on_install=buggy),
        Fake("fine", log),
    ]

    with pytest.raises(StackUpError) as caught:
        stack.bring_up(ctx, services, reporter, start_slots=2)

    error = caught.value
    assert [e.service for e in error.errors] == ["broken", "dependent", "buggy"]
    text = str(error)
    assert "[broken] Maven could not resolve the server's jars (exit 1)" in text
    assert "--- last lines of the broken log ---\nERROR no route to host" in text
    assert "[dependent] not started: its dependency broken failed" in text
    assert "[buggy] OSError: disk full" in text
    assert log == ["fine:start", "fine:healthy"]
    assert [reporter.last_phase(n) for n in ("broken", "dependent", "buggy", "fine")] == [
        Phase.FAILED, Phase.FAILED, Phase.FAILED, Phase.HEALTHY,
    ]


def test_up_loads_the_services_with_their_dependencies(ctx: StackContext, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_bring_up(ctx: StackContext, services: list[Service], reporter: object, start_slots: int) -> list[Service]:
        seen.append([s.name for s in services])
        assert start_slots >= 2
        return services

    monkeypatch.setattr(stack, "bring_up", fake_bring_up)
    stack.up(ctx, ["kubernetes"])
    assert seen == [["etcd", "kubernetes"]]


def test_the_worker_needs_kafka_and_pulsar_first_and_the_rest_can_come_up_after() -> None:
    others = [n for n in stack.SERVICES if n not in ("kafka", "pulsar")]
    assert stack.split_core(list(stack.SERVICES)) == (["kafka", "pulsar"], others)
    assert stack.split_core(["kubernetes", "pulsar"]) == (["pulsar"], ["etcd", "kubernetes"])
    assert stack.split_core(["kubernetes"]) == ([], ["etcd", "kubernetes"])


def test_a_core_service_brings_its_dependencies_into_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "CORE", ("kafka", "kubernetes"))
    assert stack.split_core(["kafka", "etcd", "kubernetes", "s3"]) == (["kafka", "etcd", "kubernetes"], ["s3"])


def test_one_background_up_at_a_time(ctx: StackContext, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[tuple[list[str], dict[str, str]]] = []

    def fake_spawn(argv: list[str], *, log_path: Path, pid_path: Path, cwd: Path, env: dict[str, str]) -> int:
        spawned.append((list(argv), dict(env)))
        pid_path.write_text(str(os.getpid()))  # a live process stands for the background up
        return os.getpid()

    monkeypatch.setattr(process, "spawn", fake_spawn)
    ctx.home.mkdir(parents=True)
    (ctx.home / stack.BACKGROUND_LOG).write_text("lines of an earlier run\n")

    first = stack.up_in_background(ctx, ["prometheus", "s3"])
    assert (first.pid, first.log, first.already_running) == (os.getpid(), ctx.home / "up-background.log", False)
    assert not first.log.exists(), "the log of an earlier run is not mixed with this one"
    [(argv, env)] = spawned
    assert argv[1:] == ["-m", "devstack", "up", "prometheus", "s3"]
    assert (env["DEVSTACK_HOME"], env["DEVSTACK_CACHE_DIR"]) == (str(ctx.home), str(ctx.cache_dir))

    second = stack.up_in_background(ctx, ["prometheus", "s3"])
    assert second.already_running and second.pid == os.getpid()
    assert len(spawned) == 1


# -- the CLI: `up --core-first` ---------------------------------------------------------------------------------

CLI_LOG: list[str] = []


class CoreFake(Fake):
    def __init__(self) -> None:
        super().__init__("core-fake", CLI_LOG)


class RestFake(Fake):
    def __init__(self) -> None:
        super().__init__("rest-fake", CLI_LOG)


@pytest.fixture
def cli_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackContext]:
    monkeypatch.setitem(stack.SERVICES, "core-fake", f"{__name__}:CoreFake")
    monkeypatch.setitem(stack.SERVICES, "rest-fake", f"{__name__}:RestFake")
    monkeypatch.setattr(stack, "CORE", ("core-fake",))
    monkeypatch.setenv("DEVSTACK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEVSTACK_CACHE_DIR", str(tmp_path / "cache"))
    CLI_LOG.clear()
    get_settings.cache_clear()
    try:
        yield stack.context(get_settings())
    finally:
        get_settings.cache_clear()


def test_core_first_starts_the_core_here_and_hands_the_rest_to_the_background(
    cli_stack: StackContext, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handed: list[list[str]] = []

    def fake_background(ctx: StackContext, names: list[str]) -> stack.Background:
        assert CLI_LOG == ["core-fake:start", "core-fake:healthy"], "the core is up before the rest is handed over"
        handed.append(list(names))
        return stack.Background(4242, ctx.home / stack.BACKGROUND_LOG, already_running=False)

    monkeypatch.setattr(stack, "up_in_background", fake_background)

    assert main(["up", "--core-first", "core-fake", "rest-fake"]) == 0

    assert handed == [["rest-fake"]]
    err = capsys.readouterr().err
    assert "core-fake: healthy" in err
    assert f"(pid 4242) brings up rest-fake; progress: {cli_stack.home / 'up-background.log'}" in err


def test_a_failed_core_is_reported_and_nothing_goes_to_the_background(
    cli_stack: StackContext, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_ctx: StackContext) -> None:
        raise DevstackError("core-fake", "the server exited during start", "boom")

    monkeypatch.setattr(CoreFake, "install", lambda self, ctx: broken(ctx))
    monkeypatch.setattr(stack, "up_in_background", lambda ctx, names: pytest.fail("nothing may go to the background"))

    assert main(["up", "--core-first", "core-fake", "rest-fake"]) == 1

    err = capsys.readouterr().err
    assert "devstack: [core-fake] the server exited during start" in err
    assert "boom" in err
    assert "0 of 1 services healthy" in err


def test_plain_up_shows_progress_and_prints_the_status_of_every_service(
    cli_stack: StackContext, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", "core-fake", "rest-fake"]) == 0
    captured = capsys.readouterr()
    assert [row["service"] for row in json.loads(captured.out)] == ["core-fake", "rest-fake"]
    assert "core-fake: healthy" in captured.err and "rest-fake: healthy" in captured.err
    assert "2 of 2 services healthy" in captured.err


def test_the_background_up_is_a_real_process_of_this_checkout_logging_into_the_stack_home(
    ctx: StackContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unknown name: the background `up` fails at once, so nothing is installed or started, yet its answer
    # shows the process ran this checkout's devstack (from any working directory) with this stack's home.
    monkeypatch.chdir(tmp_path)
    background = stack.up_in_background(ctx, ["no-such-service"])
    deadline_polls = int(TIMEOUT / 0.2)
    for _ in range(deadline_polls):
        if not process.pid_alive(background.pid):
            break
        threading.Event().wait(0.2)
    assert not process.pid_alive(background.pid)
    text = background.log.read_text()
    assert "devstack: [no-such-service] unknown service; choose from kafka, pulsar" in text
    assert stack.background_pid(ctx) is None, "a finished background up does not count as running"
