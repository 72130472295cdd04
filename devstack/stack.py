"""The whole local stack: which services exist, and bringing a chosen set up, down, or reporting on it."""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from devstack import process
from devstack.base import PythonModuleService, Service, StackContext
from devstack.errors import DevstackError, StackUpError
from devstack.progress import Phase, Reporter
from pipeline.config import Settings

#: Service name -> "module:Class". Order is start order for `up` with no names.
SERVICES: dict[str, str] = {
    "kafka": "devstack.kafka:Kafka",
    "pulsar": "devstack.pulsar:Pulsar",
    "prometheus": "devstack.prometheus:Prometheus",
    "cassandra": "devstack.cassandra:Cassandra",
    "ignite": "devstack.ignite:Ignite",
    "elasticsearch": "devstack.elasticsearch:Elasticsearch",
    "s3": "devstack.seaweedfs:SeaweedS3",
    "etcd": "devstack.etcd:Etcd",
    "kubernetes": "devstack.kubernetes:KubeApiServer",
    "openproject": "devstack.openproject:OpenProjectStandIn",
    "derivatives": "devstack.derivatives:DerivativesStandIn",
}


def context(settings: Settings) -> StackContext:
    settings.devstack_cache_dir.mkdir(parents=True, exist_ok=True)
    settings.devstack_home.mkdir(parents=True, exist_ok=True)
    return StackContext(cache_dir=settings.devstack_cache_dir.resolve(), home=settings.devstack_home.resolve())


def load(name: str) -> Service:
    try:
        target = SERVICES[name]
    except KeyError:
        raise DevstackError(name, f"unknown service; choose from {', '.join(SERVICES)}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    service: Service = cls()
    return service


def with_dependencies(names: Iterable[str]) -> list[str]:
    """``names`` plus what they depend on, dependencies first, in registry order."""
    wanted: set[str] = set()

    def visit(name: str) -> None:
        if name in wanted:
            return
        for dep in load(name).depends_on:
            visit(dep)
        wanted.add(name)

    for name in names:
        visit(name)
    return [name for name in SERVICES if name in wanted]


#: What ``python -m pipeline worker`` needs before it starts: it creates its Kafka topics and runs the
#: Pulsar bridge (``pipeline.worker.run_worker``, ``bridge_service``). Every other backend is reached by a
#: provisioner on first use, so ``make run`` starts these in the foreground and the rest in the background.
CORE: tuple[str, ...] = ("kafka", "pulsar")

#: Files under DEVSTACK_HOME of the background ``up`` that ``up --core-first`` leaves running.
BACKGROUND_LOG = "up-background.log"
BACKGROUND_PID = "up-background.pid"


def default_start_slots() -> int:
    """Servers starting at once: one per core (at least two). A JVM's start keeps a core busy, and a server
    starved of CPU by the others spends its own start timeout waiting for a core."""
    return max(2, os.cpu_count() or 2)


def up(
    ctx: StackContext,
    names: Sequence[str] = (),
    *,
    reporter: Reporter | None = None,
    start_slots: int | None = None,
) -> list[Service]:
    """Install what is missing and start ``names`` (all services if empty), waiting until healthy.

    Installs run at once (Go builds one at a time, see ``gobuild.build_slot``); each server starts as soon
    as it is installed and its ``depends_on`` are healthy. Raises :class:`StackUpError` naming every
    service that failed, after the others finished.
    """
    services = [load(name) for name in with_dependencies(names or list(SERVICES))]
    return bring_up(ctx, services, reporter or ctx.reporter, start_slots or default_start_slots())


def bring_up(ctx: StackContext, services: Sequence[Service], reporter: Reporter, start_slots: int) -> list[Service]:
    """Install and start ``services`` concurrently, one thread each; see :func:`up`.

    A dependency outside ``services`` is taken as already up (``up`` always includes them).
    """
    ctx = replace(ctx, reporter=reporter)
    finished = {service.name: threading.Event() for service in services}
    failures: dict[str, DevstackError] = {}
    slots = threading.BoundedSemaphore(start_slots)

    def fail(name: str, error: DevstackError) -> None:
        failures[name] = error
        reporter.phase(name, Phase.FAILED, str(error).splitlines()[0])

    def bring(service: Service) -> None:
        name = service.name
        try:
            service.install(ctx)
            for dep in service.depends_on:
                if dep not in finished:
                    continue
                if not finished[dep].is_set():
                    reporter.phase(name, Phase.WAITING, f"for {dep}")
                    finished[dep].wait()
                if dep in failures:
                    raise DevstackError(name, f"not started: its dependency {dep} failed")
            if not slots.acquire(blocking=False):
                reporter.phase(name, Phase.WAITING, f"for a start slot ({start_slots} servers start at a time)")
                slots.acquire()
            try:
                service.start(ctx)
            finally:
                slots.release()
        except DevstackError as exc:
            fail(name, exc)
        except Exception as exc:  # a bug or an OS error in one service must not hide the others' outcome
            fail(name, DevstackError(name, f"{type(exc).__name__}: {exc}"))
        finally:
            finished[name].set()

    for service in services:
        reporter.phase(service.name, Phase.QUEUED)
    threads = [threading.Thread(target=bring, args=(s,), name=f"devstack-{s.name}", daemon=True) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Daemon threads joined in short steps: Ctrl-C reaches the main thread instead of waiting for every
        # download and build to end.
        while thread.is_alive():
            thread.join(0.5)
    errors = [failures[s.name] for s in services if s.name in failures]
    if errors:
        raise StackUpError(errors)
    return list(services)


def split_core(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``names`` with their dependencies, split into what the worker needs to start (:data:`CORE`, with its
    dependencies) and the rest, each in registry order."""
    wanted = with_dependencies(names)
    core = set(with_dependencies([name for name in wanted if name in CORE]))
    return [n for n in wanted if n in core], [n for n in wanted if n not in core]


@dataclass(frozen=True)
class Background:
    """The background ``up`` of the services the worker does not need at start."""

    pid: int
    log: Path
    #: True if one was running already (a second ``make run``), so none was started.
    already_running: bool


def background_pid(ctx: StackContext) -> int | None:
    return process.read_pid(ctx.home / BACKGROUND_PID)


def up_in_background(ctx: StackContext, names: Sequence[str]) -> Background:
    """Start ``python -m devstack up NAMES`` detached, its progress (plain lines) in DEVSTACK_HOME."""
    log = ctx.home / BACKGROUND_LOG
    running = background_pid(ctx)
    if running is not None:
        return Background(running, log, already_running=True)
    log.unlink(missing_ok=True)  # one run per log: the lines of an earlier run would mislead
    # The same stack (DEVSTACK_HOME and the cache, resolved), and this checkout's devstack: the package is
    # not installed into the venv, it is found on the path.
    root = PythonModuleService.source_root
    env = {**os.environ, "DEVSTACK_HOME": str(ctx.home), "DEVSTACK_CACHE_DIR": str(ctx.cache_dir)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    pid = process.spawn(
        [sys.executable, "-m", "devstack", "up", *names],
        log_path=log,
        pid_path=ctx.home / BACKGROUND_PID,
        cwd=root,
        env=env,
    )
    return Background(pid, log, already_running=False)


def down(ctx: StackContext, names: Sequence[str] = ()) -> list[str]:
    """Stop what this stack started (by pid), in reverse start order; return the names stopped."""
    stopped = []
    for name in reversed(list(names or SERVICES)):
        if load(name).stop(ctx):
            stopped.append(name)
    return stopped


def status(ctx: StackContext, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    rows = []
    for name in names or SERVICES:
        service = load(name)
        pid = service.pid(ctx)
        healthy = service.safe_healthy(ctx)
        rows.append(
            {
                "service": name,
                "address": service.address(ctx),
                "pid": pid,
                "healthy": healthy,
                "started_here": pid is not None,
                "log": str(ctx.log_path(name)) if pid is not None else None,
            }
        )
    return rows


def exports(ctx: StackContext, names: Sequence[str] = ()) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name in names or SERVICES:
        merged.update(load(name).exports(ctx))
    return merged


def status_json(ctx: StackContext, names: Sequence[str] = ()) -> str:
    return json.dumps(status(ctx, names), indent=2)


def service_log_tail(ctx: StackContext, name: str, lines: int = 60) -> str:
    return process.log_tail(ctx.log_path(name), lines)
