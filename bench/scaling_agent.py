"""Per-sample cost of the scaling agent: events per second with forecasting on, off, and without the agent.

Real load: NAB's AWS CloudWatch CPU series (``../shared/data/nab``, 5-minute samples) as the workloads of a few
tenants, each with a target-tracking and a predictive policy. Two window sizes: 5-minute utilization windows, so
that every sample closes a window and is learned, forecast (horizon 12, the band of the policies) and decided
on - the agent's worst case - and 20-minute windows (4 samples per window, as 60-second windows with a sample
every 15 s would be). Two measurements in the same run:

* ``in_process``: the agent's code path (``ScalingEngine.on_sample``) over dict-backed tables, forecasting on and
  off, interleaved, µs per sample (wall and CPU) and the model's share (learn + forecast per window);
* ``worker``: real worker processes (``python -m pipeline worker``) on a Kafka broker of their own (the stack's
  Kafka on free ports: the shared one holds other runs' samples, and other workers would read ours), each with a
  fresh consumer group: tenants and policies first, then the samples produced as fast as possible; the rate is
  samples / seconds until both consumers of ``resource-metrics`` (the usage/utilization agent and the scaling
  agent) have processed them all, the CPU is the worker's (all threads). Modes: forecasting on
  (``SCALING_FORECAST_ENABLED=true``), off (``false``: windows and decisions without forecasts) and the scaling
  agents off (``SCALING_ENABLED=false``: the worker without them), interleaved, ``--rounds`` times each.
  Applying to Kubernetes is off (``SCALING_APPLY_ENABLED=false``): its calls run in threads, off the loop.

``.venv/bin/python -m bench.scaling_agent`` (about 6 minutes on 2 cores) prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bench.stream_support import nab_cpu_series, scrape, tree_cpu_seconds
from devstack import stack
from devstack.harness.scaling import Broker, produce, run_id, tenant_created
from devstack.harness.worker import WorkerProcess
from pipeline.config import get_settings
from pipeline.contract.topics import SCALING_DEMANDS, SCALING_POLICY_REQUESTS, kafka_topics
from pipeline.events.models import ResourceMetrics, Tier
from pipeline.provisioners.tiers import Quota
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.engine_io import EngineConfig, Tables
from pipeline.scaling.policies import parse_policy
from pipeline.scaling.records import (
    ModelSnapshot,
    PolicyChange,
    PolicySet,
    StoredDecision,
    WorkloadIndex,
    WorkloadScaling,
)
from pipeline.scaling.snapshot_signing import SnapshotSigner
from pipeline.tenants.models import QuotaRecord, TenantRecord
from pipeline.typed_table import TypedTable

ROOT = Path(__file__).resolve().parents[1]

SAMPLE_SECONDS = 300
WORKLOAD_CORES = 8.0
JWT_SECRET = "bench-secret-of-at-least-32-bytes-000"  # noqa: S105 - a local throwaway worker
SNAPSHOT_SIGNING_KEY = "bench-snapshot-signing-key-0000"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
MODES: dict[str, dict[str, str]] = {
    "forecasting_on": {"SCALING_ENABLED": "true", "SCALING_FORECAST_ENABLED": "true"},
    "forecasting_off": {"SCALING_ENABLED": "true", "SCALING_FORECAST_ENABLED": "false"},
    "scaling_agents_off": {"SCALING_ENABLED": "false"},
}


def policy_documents(tenant_id: str, workload: str) -> list[dict[str, Any]]:
    return [
        {"policy_id": f"{workload}-cpu", "tenant_id": tenant_id, "workload": workload, "kind": "target_tracking",
         "target_utilization": 0.7, "max_replicas": 50},
        {"policy_id": f"{workload}-ahead", "tenant_id": tenant_id, "workload": workload, "kind": "predictive",
         "lead_steps": 2, "horizon_steps": 4, "target_utilization": 0.7, "max_replicas": 50},
    ]


def samples(tenants: list[str], series: dict[str, list[float]], steps: int, run: str) -> list[ResourceMetrics]:
    """Step by step, every workload of every tenant (tenant ``k`` starts ``97 k`` samples into each series)."""
    events = []
    for step in range(steps):
        at = T0 + timedelta(seconds=SAMPLE_SECONDS * step)
        for k, tenant in enumerate(tenants):
            for workload, values in series.items():
                value = values[(step + 97 * k) % len(values)]
                events.append(ResourceMetrics(
                    event_id=f"{run}-{tenant}-{workload}-{step}", tenant_id=tenant, occurred_at=at, workload=workload,
                    cpu_cores=round(value / 100 * WORKLOAD_CORES, 4), memory_gib=16.0, gpus=0.0,
                ))
    return events


# -- in process -------------------------------------------------------------------------------------------------


def in_process(series: dict[str, list[float]], tenants: int, steps: int, forecast: bool,
               window_seconds: int) -> dict[str, Any]:
    tables = Tables(
        policies=TypedTable({}, PolicySet), state=TypedTable({}, WorkloadScaling),
        decisions=TypedTable({}, StoredDecision), index=TypedTable({}, WorkloadIndex),
        snapshots=TypedTable({}, ModelSnapshot), tenants=TypedTable({}, TenantRecord),
        quotas=TypedTable({}, QuotaRecord),
    )
    engine = ScalingEngine(EngineConfig(window_seconds=window_seconds, forecast_enabled=forecast,
                                        apply_enabled=False,
                                        signer=SnapshotSigner(SNAPSHOT_SIGNING_KEY.encode())), tables)
    ids = [f"t{k}" for k in range(tenants)]
    for tenant in ids:
        tables.tenants.put(tenant, TenantRecord(tenant_id=tenant, name=tenant, tier=Tier.STANDARD, created_at=T0,
                                                updated_at=T0, source_event_id="bench"))
        tables.quotas.put(tenant, QuotaRecord(tenant_id=tenant, updated_at=T0, updated_by="bench",
                                              limits=Quota(cpu_cores=1000, memory_gib=4000, gpus=0, storage_gib=1)))
        for workload in series:
            for document in policy_documents(tenant, workload):
                policy = parse_policy(document)
                engine.on_policy_change(PolicyChange(event_id=f"{tenant}-{policy.policy_id}", tenant_id=tenant,
                                                     occurred_at=T0, op="put", policy_id=policy.policy_id,
                                                     policy=policy))
    events = samples(ids, series, steps, "inproc")
    wall, cpu = time.perf_counter(), time.process_time()
    for event in events:
        engine.on_sample(event)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = engine.stats
    return {
        "forecasting": forecast, "window_seconds": window_seconds, "samples": len(events),
        "windows_closed": stats.windows,
        "us_per_sample_wall": round(1e6 * wall / len(events), 1),
        "us_per_sample_cpu": round(1e6 * cpu / len(events), 1),
        "samples_per_s": round(len(events) / wall),
        "model_us_per_window": round(1e6 * stats.model_seconds / stats.model_calls, 1) if stats.model_calls else 0.0,
        "snapshots": stats.snapshots,
    }


# -- a worker ----------------------------------------------------------------------------------------------------


async def commit_end_offsets(bootstrap: str, group: str, topics: list[str]) -> None:
    """A fresh consumer group starting at the current end of ``topics`` (earlier runs' records are skipped)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or set())]
        if tps:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
    finally:
        await consumer.stop()


def total(samples_: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples_.items() if n == name and wanted <= set(ls))


def api_get(url: str, path: str, token: str) -> int:
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.25)


def worker_run(broker: Broker, workdir: Path, mode: str, series: dict[str, list[float]], tenants: int, steps: int,
               label: str, timeout: float, window_seconds: int) -> dict[str, Any]:
    from web.auth import issue_dev_token

    run = f"{label}-{run_id()}"
    app_id = f"bench-scaling-{run}"
    asyncio.run(commit_end_offsets(broker.bootstrap, app_id, [*kafka_topics("dead-letter-events"), SCALING_DEMANDS]))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "APP_ID": app_id, "JWT_SECRET": JWT_SECRET,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY,
        "EXECUTOR_ENABLED": "false", "BRIDGE_ENABLED": "false", "STORE": "rocksdb://",
        "UTILIZATION_WINDOW_SECONDS": str(window_seconds), "SCALING_APPLY_ENABLED": "false",
        "SCALING_TICK_SECONDS": "0", **MODES[mode],
    }
    from devstack.harness.scaling import free_port

    port = free_port()
    worker = WorkerProcess(env, port, workdir / f"data-{run}", workdir / f"worker-{run}.log").start()
    url = f"http://127.0.0.1:{port}"
    token = issue_dev_token(JWT_SECRET, "bench", ["platform-admin"], None, timedelta(hours=1))
    try:
        started = time.monotonic()
        worker.wait_ready(timeout=240)
        ready_s = time.monotonic() - started
        ids = [f"b{run.replace('-', '')[:12]}t{k}" for k in range(tenants)]
        produce(broker.bootstrap, "tenant-created-events", [tenant_created(t) for t in ids])
        wait(lambda: all(api_get(url, f"/api/v1/tenants/{t}", token) == 200 for t in ids), 120, "the tenants")
        changes = []
        for tenant in ids:
            for workload in series:
                for document in policy_documents(tenant, workload):
                    policy = parse_policy(document)
                    change = PolicyChange(event_id=f"{run}-{tenant}-{policy.policy_id}", tenant_id=tenant,
                                          occurred_at=datetime.now(UTC), op="put", policy_id=policy.policy_id,
                                          policy=policy)
                    changes.append((tenant, change.model_dump(mode="json"), None))
        produce(broker.bootstrap, SCALING_POLICY_REQUESTS, changes)
        last = ids[-1]
        wait(lambda: api_get(url, f"/api/v1/scaling/policies?tenant_id={last}", token) == 200, 60, "the policies")
        time.sleep(2.0)  # the last policy changes are applied; the worker is idle again
        events = samples(ids, series, steps, run)
        records = [(e.tenant_id, e.model_dump(mode="json"), e.occurred_at) for e in events]
        assert worker.proc is not None
        cpu0, t0 = tree_cpu_seconds(worker.proc.pid), time.monotonic()
        produce(broker.bootstrap, "resource-metrics", records)
        produced_s = time.monotonic() - t0
        n = len(events)
        scaling = mode != "scaling_agents_off"

        def done() -> bool:
            seen = scrape(f"{url}/metrics")
            usage_done = total(seen, "provisioning_events_processed_total", topic="resource-metrics") >= n
            return usage_done and (not scaling or total(seen, "scaling_samples_total") >= n)

        wait(done, timeout, f"{n} samples processed ({mode})")
        elapsed, cpu = time.monotonic() - t0, tree_cpu_seconds(worker.proc.pid) - cpu0
        seen = scrape(f"{url}/metrics")
        model_count = total(seen, "scaling_model_seconds_count")
        return {
            "mode": mode, "window_seconds": window_seconds, "samples": n, "worker_ready_s": round(ready_s, 1),
            "produce_s": round(produced_s, 2),
            "seconds": round(elapsed, 2), "events_per_s": round(n / elapsed, 1),
            "worker_cpu_us_per_event": round(1e6 * cpu / n, 1),
            "windows_closed": int(total(seen, "scaling_windows_closed_total")),
            "decisions": int(total(seen, "scaling_decisions_total")),
            "model_us_per_window_in_agent": round(1e6 * total(seen, "scaling_model_seconds_sum") / model_count, 1)
            if model_count else None,
            "snapshots": int(total(seen, "scaling_snapshot_seconds_count")),
            "loadavg": [round(v, 2) for v in os.getloadavg()],
        }
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400, help="samples per workload (one window each)")
    parser.add_argument("--rounds", type=int, default=2, help="worker runs per mode (interleaved)")
    parser.add_argument("--inproc-steps", type=int, default=600)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--windows", default="300,1200", help="window sizes in seconds (samples are 5 minutes apart)")
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    series = nab_cpu_series()
    result: dict[str, Any] = {
        "benchmark": "scaling_agent",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_start": os.getloadavg()},
        "workloads_per_tenant": len(series), "sample_seconds": SAMPLE_SECONDS, "horizon": 12,
    }
    runs = [in_process(series, 2, args.inproc_steps, forecast, window)
            for window in windows for forecast in (True, False, True, False)]
    result["in_process"] = runs
    result["in_process_summary"] = {
        f"window_{window}s": {
            "us_per_sample_forecasting_on": min(r["us_per_sample_cpu"] for r in runs
                                                if r["forecasting"] and r["window_seconds"] == window),
            "us_per_sample_forecasting_off": min(r["us_per_sample_cpu"] for r in runs
                                                 if not r["forecasting"] and r["window_seconds"] == window),
            "model_us_per_window": min(r["model_us_per_window"] for r in runs
                                       if r["forecasting"] and r["window_seconds"] == window),
        }
        for window in windows
    }
    if not args.skip_worker:
        workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
        broker = Broker.start(stack.context(get_settings()).cache_dir, workdir / "kafka-home")
        try:
            worker_runs = []
            for round_ in range(args.rounds):
                for window in windows:
                    for mode in MODES:
                        worker_runs.append(worker_run(broker, workdir, mode, series, args.tenants, args.steps,
                                                      f"r{round_}w{window}{mode[:3]}", args.timeout, window))
            result["worker"] = worker_runs
            result["worker_summary"] = {
                f"window_{window}s": {
                    mode: {
                        "events_per_s": median(r["events_per_s"] for r in worker_runs
                                               if r["mode"] == mode and r["window_seconds"] == window),
                        "worker_cpu_us_per_event": median(r["worker_cpu_us_per_event"] for r in worker_runs
                                                          if r["mode"] == mode and r["window_seconds"] == window),
                    }
                    for mode in MODES
                }
                for window in windows
            }
        finally:
            broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    result["loadavg_at_end"] = os.getloadavg()
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
