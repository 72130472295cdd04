"""Tenant provisioning latency and throughput on the local stack (issue 4). Prints JSON.

Starts the backends it needs (reusing healthy ones), an event plane of its own (a Kafka broker on free ports
and a Pulsar namespace: see ``devstack/harness/tenant_provisioning.py`` for why) and one worker with
the executor on, then:

* **sequential**: ``--sequential`` tenants (tiers free/standard/enterprise in turn) created one after
  another: a ``tenant-created`` event published on Pulsar, then wait until ``provisioning-events`` (read
  from the worker's Kafka) announced ``ready`` for all seven resources. Latency = publish -> the seventh
  ``ready`` received. p50/p95 over those tenants; one warm-up tenant before them is reported apart (it pays
  for the first connection to every backend).
* **burst**: ``--burst`` tenants published at once: time until all are ready, tenants per minute, and the
  per-tenant latencies.

Per backend it reports when its ``ready`` came (after the publish) and how long its apply took (the
executor's ``<resource> apply of tenant ... took`` log lines). No input data is needed (the tenants are
synthetic). Every tenant is purged from every backend at the end (Kubernetes namespaces stay
``Terminating`` on the local stack, which runs no controller-manager).

    .venv/bin/python -m bench.provisioning_latency [--sequential 50] [--burst 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from devstack import stack
from devstack.harness.tenant_provisioning import (
    BACKEND_SERVICES,
    Api,
    EventPlane,
    Publisher,
    executor_env,
    free_port,
    purge_tenants,
    settings_from,
    tenant_created,
)
from devstack.harness.worker import (
    WorkerProcess,
    poll,
)
from pipeline.config import get_settings
from pipeline.provisioners.base import RESOURCES, TenantSpec
from web.auth import issue_dev_token

ROOT = Path(__file__).resolve().parents[1]

TIERS = ("free", "standard", "enterprise")
SECRET = secrets.token_hex(32)  # the worker's JWT_SECRET, for this run only
#: The executor's timing line (matched loosely: another module's log filter may re-wrap the message).
_APPLY_LINE = re.compile(r"(\w+) apply of tenant (\S+?) took ([0-9.]+)s")


class ReadyWatcher:
    """Reads ``provisioning-events`` in a thread: when each (tenant, resource) became ready, as seen here."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.ready: dict[str, dict[str, float]] = defaultdict(dict)  # tenant -> resource -> time.time()
        #: tenant -> (resource, status) -> the first such event's occurred_at (pending, provisioning, ready)
        self.at: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
        self.failed: dict[str, list[str]] = defaultdict(list)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> ReadyWatcher:
        self._thread.start()
        if not self._started.wait(60):
            raise RuntimeError("the provisioning-events consumer did not start")
        return self

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer("provisioning-events", bootstrap_servers=self.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
        await consumer.start()
        self._started.set()
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                seen = time.time()
                with self._cond:
                    for records in batches.values():
                        for record in records:
                            self._record(json.loads(record.value), seen)
                    self._cond.notify_all()
        finally:
            await consumer.stop()

    def _record(self, event: dict[str, Any], seen: float) -> None:
        tenant, resource, status = event.get("tenant_id", ""), event.get("resource", ""), event.get("status")
        if resource not in RESOURCES:
            return
        if status in ("pending", "provisioning", "ready"):
            self.at[tenant].setdefault((resource, status), datetime.fromisoformat(event["occurred_at"]).timestamp())
        if status == "ready":
            self.ready[tenant].setdefault(resource, seen)
        elif status in ("failed", "retrying", "waiting"):
            self.failed[tenant].append(f"{resource} {status}: {event.get('detail', {}).get('last_error')}")

    def wait_all_ready(self, tenants: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(len(self.ready[t]) == len(RESOURCES) for t in tenants):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "p95": round(pct(values, 95), 3),
            "min": round(min(values), 3), "max": round(max(values), 3), "mean": round(statistics.fmean(values), 3)}


def brief(values: list[float]) -> dict[str, float] | None:
    return {"p50": round(statistics.median(values), 3), "p95": round(pct(values, 95), 3)} if values else None


def stages(watcher: ReadyWatcher, published: dict[str, float]) -> dict[str, Any]:
    """Where a tenant's time goes, from the events' own timestamps (one clock: same machine).

    * ``event_to_pending``: publish on Pulsar -> the tenant-created agent wrote the pending status (bridge,
      Kafka, agent);
    * ``pending_to_apply_start``: -> the executor started the command (commands topic, executor agent, slot);
    * ``apply``: executor start -> ready (the backend calls, waiting for a thread included);
    * ``ready_to_seen``: the executor's ready -> the ready event read from provisioning-events (results
      topic, status table, provisioning-events).
    Per tenant the slowest resource counts, except ``apply`` which is also given per backend.
    """
    names = ("event_to_pending", "pending_to_apply_start", "apply", "ready_to_seen")
    found: dict[str, list[float]] = {name: [] for name in names}
    apply_by_backend: dict[str, list[float]] = defaultdict(list)
    for tenant, t0 in published.items():
        at = watcher.at[tenant]
        if not all((r, s) in at for r in RESOURCES for s in ("pending", "provisioning", "ready")):
            continue
        found["event_to_pending"].append(max(at[(r, "pending")] for r in RESOURCES) - t0)
        found["pending_to_apply_start"].append(max(at[(r, "provisioning")] - at[(r, "pending")] for r in RESOURCES))
        found["apply"].append(max(at[(r, "ready")] - at[(r, "provisioning")] for r in RESOURCES))
        found["ready_to_seen"].append(max(watcher.ready[tenant][r] - at[(r, "ready")] for r in RESOURCES))
        for r in RESOURCES:
            apply_by_backend[r].append(at[(r, "ready")] - at[(r, "provisioning")])
    return {**{name: brief(values) for name, values in found.items()},
            "apply_by_backend": {r: brief(apply_by_backend[r]) for r in RESOURCES}}


def logged_applies(log: Path, tenants: set[str]) -> dict[str, dict[str, float] | None]:
    """The executor's own ``<resource> apply of tenant <id> took <s>`` lines, per backend."""
    applies: dict[str, list[float]] = defaultdict(list)
    for match in _APPLY_LINE.finditer(log.read_text(errors="replace")):
        if match.group(2) in tenants:
            applies[match.group(1)].append(float(match.group(3)))
    return {resource: brief(applies[resource]) for resource in RESOURCES}


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = stack.context(get_settings())
    stack.up(ctx, ["etcd", *BACKEND_SERVICES])
    backends_env = stack.exports(ctx, ["etcd", *BACKEND_SERVICES])
    workdir = Path(tempfile.mkdtemp(prefix="bench-provisioning-"))
    plane = EventPlane.start(ctx.cache_dir, workdir / "plane", stack.load("pulsar").exports(ctx))
    run_id = secrets.token_hex(3)
    specs: list[TenantSpec] = []
    env = executor_env(backends_env, plane, SECRET, RECONCILE_INTERVAL_SECONDS=str(args.reconcile_interval))
    worker = WorkerProcess(env, free_port(), workdir / "data", workdir / "worker.log")
    watcher: ReadyWatcher | None = None
    publisher: Publisher | None = None
    try:
        worker.start()
        worker.wait_ready(timeout=300)
        watcher = ReadyWatcher(plane.bootstrap).start()
        publisher = Publisher(plane)
        api = Api(worker.url, issue_dev_token(SECRET, "bench", ["platform-admin"], None, timedelta(hours=2)))

        def create(tenant_id: str, tier: str) -> float:
            specs.append(TenantSpec(tenant_id=tenant_id, name=tenant_id, tier=tier, owner_user_id="x"))
            assert publisher is not None
            started = time.time()
            publisher.send("tenant-created-events", tenant_created(tenant_id, tier))
            return started

        def finish(tenants: list[str], timeout: float) -> None:
            assert watcher is not None
            if not watcher.wait_all_ready(tenants, timeout):
                missing = {t: sorted(set(RESOURCES) - set(watcher.ready[t])) for t in tenants
                           if len(watcher.ready[t]) < len(RESOURCES)}
                raise RuntimeError(f"not ready after {timeout:.0f}s: {missing}; errors: "
                                   f"{ {t: watcher.failed[t][-3:] for t in missing} }")

        # Warm-up: the first tenant opens every backend connection.
        warm = f"bench-{run_id}-warm"
        warm_t0 = create(warm, "standard")
        finish([warm], args.timeout)
        cold = watcher.ready[warm]
        cold_latency = max(cold.values()) - warm_t0

        sequential: dict[str, float] = {}
        latencies = []
        for i in range(args.sequential):
            tenant_id = f"bench-{run_id}-s{i}"
            sequential[tenant_id] = create(tenant_id, TIERS[i % len(TIERS)])
            finish([tenant_id], args.timeout)
            latencies.append(max(watcher.ready[tenant_id].values()) - sequential[tenant_id])
            if not api.all_ready(tenant_id):  # the REST API agrees (outside the timed part)
                status = poll(partial(api.all_ready, tenant_id), 30)
                if not status:
                    raise RuntimeError(f"{tenant_id}: provisioning-events said ready, the REST API did not")

        burst: dict[str, float] = {}
        burst_ids = [f"bench-{run_id}-b{i}" for i in range(args.burst)]
        burst_t0 = time.time()
        for i, tenant_id in enumerate(burst_ids):
            burst[tenant_id] = create(tenant_id, TIERS[i % len(TIERS)])
        finish(burst_ids, args.timeout * 4)
        burst_done = max(max(watcher.ready[t].values()) for t in burst_ids)
        burst_latencies = [max(watcher.ready[t].values()) - burst[t] for t in burst_ids]
        total = burst_done - burst_t0
    finally:
        if watcher is not None:
            watcher.stop()
        if publisher is not None:
            publisher.close()
        worker.stop()  # its log is complete (flushed) only now
        errors = purge_tenants(settings_from(backends_env), specs)
        if errors:
            sys.stderr.write(f"cleanup errors: {errors}\n")
        plane.stop()
    log = workdir / "worker.log"
    return {
        "benchmark": "provisioning_latency",
        "command": "python -m bench.provisioning_latency " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "worker": {"executor_concurrency": get_settings().executor_concurrency,
                   "reconcile_interval_seconds": args.reconcile_interval, "log": str(log)},
        "tiers": list(TIERS),
        "warm_up_tenant_s": round(cold_latency, 3),
        "sequential": {"tenants": args.sequential, "latency_s": summary(latencies),
                       "target_p50_s": 3.0, "p50_under_target": statistics.median(latencies) < 3.0,
                       "stages_s": stages(watcher, sequential),
                       "logged_apply_s": logged_applies(log, set(sequential))},
        "burst": {"tenants": args.burst, "time_to_all_ready_s": round(total, 3),
                  "tenants_per_minute": round(args.burst / total * 60, 1),
                  "latency_s": summary(burst_latencies),
                  "stages_s": stages(watcher, burst),
                  "logged_apply_s": logged_applies(log, set(burst))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=50, help="tenants created one after another")
    parser.add_argument("--burst", type=int, default=20, help="tenants created at once")
    parser.add_argument("--reconcile-interval", type=float, default=30.0,
                        help="RECONCILE_INTERVAL_SECONDS of the worker (the service's default)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one tenant")
    args = parser.parse_args()
    json.dump(run(args), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
