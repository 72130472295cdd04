"""Three workers of one group on one machine, one of them killed under load, and what the others do meanwhile.

Each worker binds the wildcard address (``WEB_HOST=0.0.0.0``) and advertises ``http://127.0.0.1:<port>``
(``POD_IP``), as pods behind a headless Service would. A load generator publishes tenant-created events
through Pulsar (every worker runs the bridge) at a steady rate while a reader asks random workers for random
tenants already published. Part way through, one worker is killed with SIGKILL; the survivors take over its
partitions once the group notices (its session times out), and later the killed worker is restarted.

What it measures (``ScaleOutReport``): the time from the kill until a survivor serves every tenant published
so far (every read from a survivor answers 200), the reads that failed meanwhile, the time for the
restarted worker to be ready and to serve every tenant, and at the end that every tenant published exists,
with the same record, on every worker (no event lost, tables consistent). Used by
``tests/integration/test_scale_out.py`` (short) and ``bench/scale_out.py`` (with and without standbys).
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from devstack.harness.tenant_provisioning import SNAPSHOT_SIGNING_KEY, EventPlane, Publisher, tenant_created
from devstack.harness.worker import WorkerProcess, free_port, poll

WORKERS = 3


@dataclass
class ScaleOutReport:
    standby_replicas: int
    session_timeout_seconds: float | None
    tenants_published: int
    seconds_to_serve_after_kill: float | None
    reads_during_takeover: int
    failed_reads_during_takeover: int
    failure_statuses: dict[int, int]
    seconds_to_restart_ready: float | None
    seconds_to_restart_serving: float | None
    tenants_missing: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.failed_reads_during_takeover / self.reads_during_takeover if self.reads_during_takeover else 0.0


class _Reader(threading.Thread):
    """Reads random published tenants from random live workers; counts what answered and how."""

    def __init__(self, workers: Callable[[], list[WorkerProcess]], tenants: Callable[[], list[str]], token: str):
        super().__init__(name="scale-out-reader", daemon=True)
        self._workers, self._tenants, self._token = workers, tenants, token
        self._halt = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[float, int]] = []  # (monotonic time, status; 0 = no answer)

    def run(self) -> None:
        rng = random.Random(7)
        while not self._halt.is_set():
            workers, tenants = self._workers(), self._tenants()
            if workers and tenants:
                worker, tenant = rng.choice(workers), rng.choice(tenants)
                try:
                    status = worker.get(f"/api/v1/tenants/{tenant}", self._token)[0]
                except OSError:
                    status = 0
                with self.lock:
                    self.results.append((time.monotonic(), status))
            self._halt.wait(0.02)

    def between(self, start: float, end: float) -> list[int]:
        with self.lock:
            return [status for at, status in self.results if start <= at <= end]

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def _serves_all(worker: WorkerProcess, tenants: list[str], token: str) -> bool:
    try:
        return all(worker.get(f"/api/v1/tenants/{t}", token)[0] == 200 for t in tenants)
    except OSError:
        return False


def _record(worker: WorkerProcess, tenant: str, token: str) -> dict[str, Any] | None:
    status, body = worker.get(f"/api/v1/tenants/{tenant}", token)
    if status != 200 or not isinstance(body, dict):
        return None
    return {k: body.get(k) for k in ("tenant_id", "name", "tier", "state", "generation")}


def run_scale_out(
    plane: EventPlane, work_dir: Path, jwt_secret: str, token: str, *,
    tenants: int = 90, rate: float = 15.0, standby_replicas: int = 0, kill_after: float = 0.4,
    session_timeout: float | None = None,
    timeout: float = 300.0, log: Callable[[str], None] = lambda _line: None,
) -> ScaleOutReport:
    """The scenario of the module docstring; ``kill_after`` is the fraction of the tenants published before the kill."""
    env = {
        **plane.env(), "APP_ID": f"scale-{secrets.token_hex(4)}", "JWT_SECRET": jwt_secret,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY, "EXECUTOR_ENABLED": "false", "STORE": "rocksdb://",
        "WEB_HOST": "0.0.0.0", "POD_IP": "127.0.0.1",  # noqa: S104 - pods behind a headless Service
        "TABLE_STANDBY_REPLICAS": str(standby_replicas),
        **({"KAFKA_SESSION_TIMEOUT_SECONDS": str(session_timeout)} if session_timeout else {}),
    }
    workers = [WorkerProcess(env, free_port(), work_dir / f"data-{i}", work_dir / f"worker-{i}.log")
               for i in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_ready()
    log(f"{WORKERS} workers ready (standby replicas {standby_replicas})")

    published: list[str] = []
    live = list(workers)
    publisher = Publisher(plane)
    reader = _Reader(lambda: list(live), lambda: list(published), token)
    run = secrets.token_hex(3)
    victim = workers[1]
    try:
        reader.start()
        kill_at = int(tenants * kill_after)
        killed_at = 0.0
        for i in range(tenants):
            tenant = f"so{run}-{i}"
            publisher.send("tenant-created-events", tenant_created(tenant))
            published.append(tenant)
            if i == kill_at:
                if not poll(lambda: _serves_all(workers[0], published[:-1], token), timeout):
                    raise AssertionError("the tenants published before the kill were never served")
                live.remove(victim)
                victim.kill()
                killed_at = time.monotonic()
                log(f"killed worker 1 after {len(published)} tenants")
            time.sleep(1.0 / rate)
        survivors = [w for w in workers if w is not victim]
        before_kill = published[: kill_at + 1]
        served = poll(lambda: all(_serves_all(w, before_kill, token) for w in survivors), timeout)
        served_at = time.monotonic()
        taken_over = served_at - killed_at if served else None
        log(f"survivors serve every tenant {taken_over}s after the kill")
        statuses = reader.between(killed_at, served_at)

        victim.start()
        restarted = time.monotonic()
        victim.wait_ready(timeout)
        ready = time.monotonic() - restarted
        live.append(victim)
        serving = poll(lambda: _serves_all(victim, published, token), timeout)
        serving_after = time.monotonic() - restarted if serving else None
        log(f"restarted worker ready after {ready:.1f}s, serving every tenant after {serving_after}s")

        missing = [t for t in published if not poll(partial(_record, workers[0], t, token), 30)]
        inconsistent = [t for t in published if len({str(_record(w, t, token)) for w in workers}) != 1]
    finally:
        reader.stop()
        publisher.close()
        for worker in workers:
            worker.stop()
    failures: dict[int, int] = {}
    for status in statuses:
        if status != 200:
            failures[status] = failures.get(status, 0) + 1
    return ScaleOutReport(
        standby_replicas=standby_replicas, session_timeout_seconds=session_timeout, tenants_published=len(published),
        seconds_to_serve_after_kill=taken_over, reads_during_takeover=len(statuses),
        failed_reads_during_takeover=sum(failures.values()), failure_statuses=failures,
        seconds_to_restart_ready=ready, seconds_to_restart_serving=serving_after,
        tenants_missing=missing, inconsistent=inconsistent,
    )
