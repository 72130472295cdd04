"""Events per second through the resource-metrics agent (table updates, dedupe, real Kafka, one worker),
side by side in the same run with a bare aiokafka consume-then-produce loop over the same records.

1. On an event plane of its own (a Kafka broker started for the run: the local stack's Kafka, same jars
   and settings, see ``bench/stream_support.py``), a worker starts (``python -m pipeline worker``,
   BRIDGE_ENABLED=false, EXECUTOR_ENABLED=false, RocksDB tables).
2. ``--tenants`` tenant-created events go straight into the Kafka topic; we wait until the worker's
   ``provisioning_events_processed_total{topic="tenant-created-events"}`` says they were all processed
   (the metrics agent refuses unknown tenants), then stop the worker (SIGTERM: it commits and flushes).
3. ``--events`` resource-metrics events (NAB's real AWS CloudWatch CPU series, see ``stream_support``)
   are produced to ``resource-metrics`` keyed by tenant id: a backlog at known offsets.
4. The bare loop (its own consumer group, same offsets) reads every record and produces one record per
   input to a scratch topic, committing like the worker does (every 500 records or 1 s, in the
   background, and only after Kafka acknowledged the records produced for them); ``--bare-repeats``
   passes (default 3), each with a fresh group.
5. The framework's floor: ``bench/faust_passthrough.py``, a Faust app with the worker's consumer and
   producer settings whose one agent forwards every record unchanged (no decoding, tables or dedupe),
   from the same offsets (``--skip-floor`` leaves it out).
6. The worker restarts on the backlog; its rate is read from
   ``provisioning_events_processed_total{topic="resource-metrics"}`` (polled every 0.25 s, first change
   to last). Then the bare passes again, to show drift. The ratio uses the median of the bare passes.

Rate = records / (time of the last one - time of the first one); CPU seconds are per 1,000 events (the
worker's process, all threads; the bench process for the bare loop). Prints JSON.

    .venv/bin/python -m bench.stream_throughput [--events 30000] [--tenants 20] [--profile out.prof]

``--profile`` runs the second worker under cProfile (slows it down: the rate is then not comparable) and
prints the top functions by cumulative and own time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import pstats
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.stream_support import (
    Worker,
    add_worker_arguments,
    commit_offsets,
    counter,
    end_offsets,
    extra_worker_env,
    loadavg,
    machine,
    metric_events,
    run_id,
    run_on_event_plane,
    tenant_created,
    tenant_ids,
    worker_env,
)
from pipeline.bridge.topics import ensure_kafka_topics
from pipeline.config import Settings
from pipeline.contract.topics import RESOURCE_METRICS, TENANT_CREATED, kafka_topics

PROCESSED = "provisioning_events_processed_total"
FAILED = "provisioning_events_failed_total"
DUPLICATE = "provisioning_events_duplicate_total"


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, value, key=key.encode()) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def bare_loop(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int], out_topic: str,
                    group: str) -> dict[str, Any]:
    """Consume [start, end) of every partition, produce one record per input, commit at-least-once."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    tps = [TopicPartition(topic, p) for p in start]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, start[tp.partition])
    total = sum(end[p] - start[p] for p in start)
    done = 0
    pending: list[asyncio.Future[Any]] = []
    positions: dict[TopicPartition, int] = {}
    since_commit = 0
    last_commit = time.perf_counter()
    first: float | None = None
    cpu0 = time.process_time()
    commits = 0
    committing: asyncio.Task[None] | None = None

    async def commit(sent: list[asyncio.Future[Any]], offsets: dict[TopicPartition, int]) -> None:
        nonlocal commits
        await asyncio.gather(*sent)  # what was produced for these inputs is in Kafka: now commit them
        await consumer.commit(offsets)
        commits += 1

    def start_commit() -> None:
        # like Faust's commit: in the background, one at a time, not stalling the loop
        nonlocal committing, pending, since_commit, last_commit
        if committing is not None and not committing.done():
            return
        committing = asyncio.ensure_future(commit(pending, dict(positions)))
        pending, since_commit, last_commit = [], 0, time.perf_counter()

    try:
        while done < total:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp.partition]:
                        continue
                    if first is None:
                        first = time.perf_counter()
                    pending.append(await producer.send(out_topic, record.value, key=record.key))
                    positions[tp] = record.offset + 1
                    done += 1
                    since_commit += 1
                    if since_commit >= 500:
                        start_commit()
            if time.perf_counter() - last_commit >= 1.0:
                start_commit()
        if committing is not None:
            await committing
        await commit(pending, dict(positions))
        finished = time.perf_counter()
    finally:
        await producer.stop()
        await consumer.stop()
    assert first is not None
    seconds = finished - first
    return {
        "events": done, "seconds": round(seconds, 3), "events_per_s": round(done / seconds, 1),
        "cpu_s_per_1k_events": round((time.process_time() - cpu0) / done * 1000, 4), "commits": commits,
        "loadavg_after": loadavg(),
    }


def handled(worker: Worker) -> dict[str, float]:
    samples = worker.metrics()
    return {name: counter(samples, metric, topic=RESOURCE_METRICS)
            for name, metric in (("processed", PROCESSED), ("failed", FAILED), ("duplicates", DUPLICATE))}


def forwarded(worker: Worker) -> dict[str, float]:
    with urllib.request.urlopen(f"{worker.url}/count", timeout=10) as response:  # noqa: S310
        return {"forwarded": float(json.load(response)["count"])}


def measure(worker: Worker, read: Callable[[Worker], dict[str, float]], total: int, timeout: float
            ) -> dict[str, Any]:
    """Poll ``read(worker)`` (counters whose sum is the events handled) until ``total`` were handled."""
    first: tuple[float, float, float] | None = None  # (time, count, cpu)
    deadline = time.monotonic() + timeout
    count = 0.0
    while time.monotonic() < deadline:
        counts = read(worker)
        now, cpu = time.perf_counter(), worker.cpu_seconds()
        count = sum(counts.values())
        if first is None and count > 0:
            first = (now, count, cpu)
        if count >= total:
            assert first is not None
            seconds = now - first[0]
            events = count - first[1]
            return {
                "events": int(count), **{k: int(v) for k, v in counts.items()}, "measured_events": int(events),
                "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1) if seconds > 0 else None,
                "cpu_s_per_1k_events": round((cpu - first[2]) / events * 1000, 4) if events else None,
                "loadavg_after": loadavg(),
            }
        time.sleep(0.25)
    raise SystemExit(f"only {count} of {total} events handled in {timeout:.0f} s; log: {worker.log_path}")


def wait_counter(worker: Worker, topic: str, wanted: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counter(worker.metrics(), PROCESSED, topic=topic) >= wanted:
            return
        time.sleep(0.25)
    raise SystemExit(f"the worker did not process {wanted} {topic} events; log: {worker.log_path}")


def top_functions(profile: Path, limit: int = 25) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in ("cumulative", "tottime"):
        buffer = io.StringIO()
        pstats.Stats(str(profile), stream=buffer).sort_stats(key).print_stats(limit)
        out[key] = [line for line in buffer.getvalue().splitlines() if line.strip()][-limit - 1:]
    return out


async def run(args: argparse.Namespace, stack: dict[str, str], workdir: Path) -> dict[str, Any]:
    bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
    run = run_id()
    app_id = f"bench-tp-{run}"
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    out_topic = f"bench-bare-out-{run}"
    result: dict[str, Any] = {
        "benchmark": "stream_throughput", "machine": machine(), "run_id": run, "app_id": app_id,
        "events": args.events, "tenants": args.tenants, "topic": RESOURCE_METRICS,
        "worker_root": str(args.worker_root), "worker_env": args.worker_env,
    }
    await ensure_kafka_topics(settings, kafka_topics(settings.dead_letter_topic))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(out_topic, num_partitions=settings.topic_partitions, replication_factor=1)])
    await admin.close()
    env = worker_env(stack, app_id, bridge=False, **extra_worker_env(args))
    started: list[Worker] = []
    try:
        # tenants first: the metrics agent refuses events of unknown tenants
        worker = Worker(env, workdir, cwd=args.worker_root)
        started.append(worker.start())
        result["worker_ready_s"] = round(worker.wait_ready(), 1)
        tenants = tenant_ids(run, args.tenants)
        await produce(bootstrap, TENANT_CREATED,
                      [(t, json.dumps(tenant_created(t, f"{t}-created")).encode()) for t in tenants])
        wait_counter(worker, TENANT_CREATED, len(tenants))
        worker.stop()

        start = await end_offsets(bootstrap, RESOURCE_METRICS)
        records = list(metric_events(run, tenants, args.events))
        result["produce_s"] = round(await produce(bootstrap, RESOURCE_METRICS, records), 2)
        end = await end_offsets(bootstrap, RESOURCE_METRICS)
        backlog = sum(end[p] - start[p] for p in start)
        result["backlog_records"] = backlog  # > events if someone else wrote to the topic meanwhile
        result["bytes_per_event"] = round(sum(len(v) for _, v in records) / len(records), 1)

        runs: list[dict[str, Any]] = []
        for i in range(args.bare_repeats):
            runs.append({"kind": "bare", **await bare_loop(bootstrap, RESOURCE_METRICS, start, end, out_topic,
                                                           f"{app_id}-bare-a{i}")})
        if not args.skip_floor:  # the framework's floor: a Faust app that only forwards, same offsets
            floor_id = f"{app_id}-faust-floor"
            await commit_offsets(bootstrap, floor_id, [RESOURCE_METRICS], start)
            floor = Worker({**stack, "PASSTHROUGH_APP_ID": floor_id, "PASSTHROUGH_OUT": out_topic}, workdir / "floor",
                           command=["-m", "bench.faust_passthrough"])
            started.append(floor.start())
            ready = floor.wait_ready()
            measured = await asyncio.to_thread(measure, floor, forwarded, backlog, args.timeout)
            runs.append({"kind": "faust_passthrough", "ready_s": round(ready, 1), **measured})
            floor.stop()

        profile: Path | None = args.profile
        restarted = Worker(env, workdir, python_args=["-m", "cProfile", "-o", str(profile)] if profile else [],
                           cwd=args.worker_root)
        started.append(restarted.start())
        ready = restarted.wait_ready()
        measured = await asyncio.to_thread(measure, restarted, handled, backlog, args.timeout)
        runs.append({"kind": "worker", "ready_s": round(ready, 1), "profiled": profile is not None, **measured})
        restarted.stop()
        for i in range(args.bare_repeats):
            runs.append({"kind": "bare", **await bare_loop(bootstrap, RESOURCE_METRICS, start, end, out_topic,
                                                           f"{app_id}-bare-b{i}")})
        result["runs"] = runs
        bare_rates = [r["events_per_s"] for r in runs if r["kind"] == "bare"]
        worker_rate = next(r["events_per_s"] for r in runs if r["kind"] == "worker")
        result["bare_events_per_s"] = round(statistics.median(bare_rates), 1)
        result["worker_events_per_s"] = worker_rate
        result["ratio_worker_to_bare"] = round(worker_rate / result["bare_events_per_s"], 3)
        floor_rate = next((r["events_per_s"] for r in runs if r["kind"] == "faust_passthrough"), None)
        if floor_rate:
            result["faust_passthrough_events_per_s"] = floor_rate
            result["ratio_faust_passthrough_to_bare"] = round(floor_rate / result["bare_events_per_s"], 3)
            result["ratio_worker_to_faust_passthrough"] = round(worker_rate / floor_rate, 3)
        result["target_ratio"] = 0.4
        if profile:
            result["profile"] = top_functions(profile)
    finally:
        for process in started:
            process.stop()
    result["loadavg_at_end"] = loadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--bare-repeats", type=int, default=3, help="bare-loop passes before and after the worker")
    add_worker_arguments(parser)
    parser.add_argument("--skip-floor", action="store_true", help="skip the Faust pass-through run")
    parser.add_argument("--keep", action="store_true", help="keep the run's data dir (worker logs, Kafka data)")
    args = parser.parse_args()
    run_on_event_plane(args, run, "stream_throughput", keep=args.keep)


if __name__ == "__main__":
    main()
