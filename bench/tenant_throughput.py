"""Tenant-created events per second (issue #17) with 1, 2, 4 worker processes, and the worker CPU each event
costs (bridge included), on a backlog.

On an event plane of its own (a Kafka broker started for the run, a Pulsar namespace of its own: see
``bench/stream_support.py``), for every count in ``--workers``, on a fresh APP_ID (so a fresh consumer
group, whose offsets on the input topics are first committed at their current end so the earlier
measurements' events are not read again) and, with ``--via pulsar``, a fresh Pulsar namespace:

1. ``N`` workers start one after another (``python -m pipeline worker``, EXECUTOR_ENABLED=false so no
   backend is touched, RocksDB tables, scaling and forecasting at their defaults: on; BRIDGE_ENABLED=true with ``--via
   pulsar``, false with ``--via kafka``), each once the previous one answers /ready (joined the group);
   then ``--settle`` seconds more (the last join's rebalance).
2. ``--events`` tenant-created events (one new tenant each, tiers round-robin) are published at once, as
   fast as the client goes: ``--via pulsar`` to the namespace's ``tenant-created-events`` (pulsar-client,
   batching on, keyed by tenant): the bridge forwards them to Kafka (the topic is not partitioned on
   Pulsar and the bridge's subscription is Failover, so one worker's bridge forwards them all);
   ``--via kafka`` straight to the Kafka topic (aiokafka, acks=all). Publishing takes a few seconds,
   far less than processing: the workers run on a backlog, i.e. at their maximum sustained rate.
3. Every worker's ``provisioning_events_processed_total{topic="tenant-created-events"}`` is polled
   (every 0.25 s) until their sum reaches the events; the rate is events / (time of the last change -
   time of the first change). CPU = user + system seconds of every worker process and its children
   (the forecaster), all threads (the bridge runs in the worker), over the same window.
4. This process reads ``provisioning-commands`` from its end offsets before the publish and matches
   commands to our events by ``cause_event_id``: an event is complete with its 7 commands (one per
   resource, distinct ``command_id``); ``lost`` = events that miss some after ``--drain`` seconds,
   ``duplicates`` = commands whose ``command_id`` was already seen.

The machine's cores are shared by all workers (and this process): with 2 cores, 2 and 4 workers measure
the per-event CPU cost more than a speed-up. ``events/s per core`` = 1,000 / CPU ms per event: the rate
one core of worker CPU would hold; ``workers for --target`` = target / that (one core per worker).
Prints JSON (``--json``) or a table.

    .venv/bin/python -m bench.tenant_throughput [--workers 1 2 4] [--events 30000] [--via pulsar|kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import pulsar
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.stream_support import (
    Worker,
    add_worker_arguments,
    commit_offsets,
    counter,
    extra_worker_env,
    loadavg,
    machine,
    run_id,
    run_on_event_plane,
    tenant_created,
    worker_env,
)
from devstack.harness.tenant_provisioning import _pulsar_admin
from pipeline.bridge.topics import ensure_kafka_topics
from pipeline.config import Settings
from pipeline.contract.topics import PROVISIONING_COMMANDS, TENANT_CREATED, kafka_topics
from pipeline.provisioners.base import RESOURCES

PROCESSED = "provisioning_events_processed_total"
FAILED = "provisioning_events_failed_total"
TIERS = ("free", "standard", "enterprise")
#: Set when a measurement ends early (an error, SIGTERM): the polling thread stops, so the run can exit.
ABORT = threading.Event()


def progress(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


class Commands:
    """Distinct command ids and duplicates per cause event, filled by :func:`read_commands`."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.ids: dict[str, set[str]] = {}
        self.duplicates = 0
        self.lock = threading.Lock()

    def complete(self) -> int:
        with self.lock:
            return sum(1 for ids in self.ids.values() if len(ids) >= len(RESOURCES))


async def read_commands(bootstrap: str, commands: Commands, stop: asyncio.Event, ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(PROVISIONING_COMMANDS) or set()
        if not partitions:
            raise SystemExit(f"{PROVISIONING_COMMANDS} has no partitions")
        tps = [TopicPartition(PROVISIONING_COMMANDS, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    try:
                        value = json.loads(record.value)
                        cause, command_id = value["cause_event_id"], value["command_id"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    if cause not in commands.wanted:
                        continue
                    with commands.lock:
                        ids = commands.ids.setdefault(cause, set())
                        if command_id in ids:
                            commands.duplicates += 1
                        ids.add(command_id)
    finally:
        await consumer.stop()


def publish_pulsar(url: str, namespace: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    producer = client.create_producer(f"persistent://{namespace}/{TENANT_CREATED}", block_if_queue_full=True,
                                      batching_enabled=True, batching_type=pulsar.BatchingType.KeyBased,
                                      max_pending_messages=10_000)
    failures = 0

    def done(result: pulsar.Result, _msg_id: Any) -> None:
        nonlocal failures
        if result != pulsar.Result.Ok:
            failures += 1

    started = time.perf_counter()
    try:
        for event in events:
            producer.send_async(json.dumps(event).encode(), done, partition_key=event["tenant_id"])
        producer.flush()
    finally:
        client.close()
    return {"seconds": round(time.perf_counter() - started, 2), "send_failures": failures}


async def publish_kafka(bootstrap: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(TENANT_CREATED, json.dumps(e).encode(), key=e["tenant_id"].encode())
                   for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {"seconds": round(time.perf_counter() - started, 2), "send_failures": 0}


def per_worker(workers: list[Worker]) -> list[tuple[float, float]]:
    """Tenant-created events processed and failed, by worker."""
    counts: list[tuple[float, float]] = []
    for worker in workers:
        try:
            samples = worker.metrics()
        except (urllib.error.URLError, OSError) as exc:
            assert worker.proc is not None
            code = worker.proc.poll()
            raise SystemExit(f"worker {worker.url} did not answer /metrics ({exc}; exit status {code}); "
                             f"log: {worker.log_path}") from exc
        counts.append((counter(samples, PROCESSED, topic=TENANT_CREATED),
                       counter(samples, FAILED, topic=TENANT_CREATED)))
    return counts


def processed(workers: list[Worker]) -> tuple[float, float]:
    """Tenant-created events processed and failed, summed over the workers."""
    counts = per_worker(workers)
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def measure(workers: list[Worker], total: int, timeout: float, base: float, cpu_at_start: float
            ) -> dict[str, Any]:
    """Poll the workers' counters until ``total`` events more than ``base`` (read before the publish) were
    handled; rate and CPU from the first change to the last."""
    first: tuple[float, float, float] | None = None  # (time, count, cpu) at the first change
    last: tuple[float, float, float] | None = None  # (time, count, cpu) at the latest change
    deadline = time.monotonic() + timeout
    count = failed = 0.0
    while time.monotonic() < deadline and not ABORT.is_set():
        done, failed = processed(workers)
        now, cpu = time.perf_counter(), sum(w.cpu_seconds() for w in workers)
        count = done - base
        if first is None and count > 0:
            first = (now, count, cpu)
        if last is None or count > last[1]:
            last = (now, count, cpu)
        if count + failed >= total:
            break
        time.sleep(0.25)
    if first is None or last is None or last[1] == 0:
        raise SystemExit(f"no event processed in {timeout:.0f} s; logs: {[str(w.log_path) for w in workers]}")
    seconds = last[0] - first[0]
    # the events counted at the first change were processed before the window opened: rate and CPU of the rest
    measured = last[1] - first[1]
    return {
        "processed": int(count), "failed": int(failed), "measured_events": int(measured),
        "seconds": round(seconds, 2), "events_per_s": round(measured / seconds, 1) if seconds > 0 else None,
        "cpu_s": round(last[2] - first[2], 2), "cpu_s_from_publish": round(last[2] - cpu_at_start, 2),
        "timed_out": count + failed < total,
        # how the events spread over the workers (partitions are assigned per worker; 4 partitions)
        "processed_by_worker": [int(c[0]) for c in per_worker(workers)],
    }


async def one_count(args: argparse.Namespace, stack: dict[str, str], workdir: Path, run: str, count: int
                    ) -> dict[str, Any]:
    bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
    app_id = f"bench-tt-{run}-w{count}"
    env_stack = dict(stack)
    namespace = stack["PULSAR_NAMESPACE"]
    if args.via == "pulsar":
        # a namespace per measurement: its topic holds only this measurement's events
        namespace = f"{stack['PULSAR_NAMESPACE']}-w{count}"
        status = _pulsar_admin(stack["PULSAR_ADMIN_URL"], "PUT", f"/namespaces/{namespace}")
        if status not in (200, 204, 409):
            raise SystemExit(f"could not create the Pulsar namespace {namespace}: HTTP {status}")
        env_stack["PULSAR_NAMESPACE"] = namespace
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    # a fresh group starts at "earliest": skip the events of the earlier measurements
    await commit_offsets(bootstrap, app_id, kafka_topics(settings.dead_letter_topic), None)
    env = worker_env(env_stack, app_id, bridge=args.via == "pulsar", **extra_worker_env(args))
    workers = [Worker(env, workdir / f"w{count}-{i}", cwd=args.worker_root) for i in range(count)]
    events = [tenant_created(f"bench-{run}-w{count}-t{i}", f"bench-{run}-w{count}-t{i}-created", TIERS[i % 3])
              for i in range(args.events)]
    commands = Commands({e["event_id"] for e in events})
    ABORT.clear()
    stop, ready = asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(read_commands(bootstrap, commands, stop, ready))
    result: dict[str, Any] = {"workers": count, "app_id": app_id, "pulsar_namespace": namespace if
                              args.via == "pulsar" else None}
    try:
        # one after another (each joins once the previous is ready), as a rolling deployment starts them
        started = time.monotonic()
        for worker in workers:
            worker.start()
            await asyncio.to_thread(worker.wait_ready)
        result["ready_s"] = round(time.monotonic() - started, 1)
        await asyncio.sleep(args.settle)
        await ready.wait()
        progress(f"{count} worker(s) ready in {result['ready_s']} s; publishing {len(events)} events via {args.via}")
        result["loadavg_before"] = loadavg()
        # read before the publish: the workers start on the events while they are being published
        base, _ = processed(workers)
        cpu_at_start = sum(w.cpu_seconds() for w in workers)
        measuring = asyncio.create_task(asyncio.to_thread(measure, workers, len(events), args.timeout, base,
                                                          cpu_at_start))
        if args.via == "pulsar":
            result["publish"] = await asyncio.to_thread(publish_pulsar, stack["PULSAR_URL"], namespace, events)
        else:
            result["publish"] = await publish_kafka(bootstrap, events)
        progress(f"published: {result['publish']}")
        result.update(await measuring)
        progress(f"processed {result['processed']} in {result['seconds']} s: {result['events_per_s']}/s")
        result["loadavg_after"] = loadavg()
        deadline = time.monotonic() + args.drain
        for _ in range(int(args.drain / 0.25) + 1):  # the last commands may still be on their way
            if commands.complete() >= len(events) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
    finally:
        ABORT.set()  # a measuring thread still polling (after an error) ends; the next measurement clears it
        stop.set()
        await reader
        for worker in workers:
            worker.stop()
        if args.via == "pulsar":
            _pulsar_admin(stack["PULSAR_ADMIN_URL"], "DELETE", f"/namespaces/{namespace}?force=true")
    with commands.lock:
        result["commands"] = sum(len(ids) for ids in commands.ids.values()) + commands.duplicates
    result["lost_events"] = len(events) - commands.complete()
    result["duplicate_commands"] = commands.duplicates
    if result["measured_events"] and result["cpu_s"] > 0:
        cpu_ms = result["cpu_s"] / result["measured_events"] * 1000
        result["cpu_ms_per_event"] = round(cpu_ms, 3)
        result["events_per_s_per_core"] = round(1000 / cpu_ms, 1)
        result["workers_for_target"] = math.ceil(args.target * cpu_ms / 1000)
    return result


async def run(args: argparse.Namespace, stack: dict[str, str], workdir: Path) -> dict[str, Any]:
    run = run_id()
    settings = Settings(kafka_bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"])
    await ensure_kafka_topics(settings, kafka_topics(settings.dead_letter_topic))
    result: dict[str, Any] = {
        "benchmark": "tenant_throughput", "machine": machine(), "run_id": run, "via": args.via,
        "events": args.events, "commands_per_event": len(RESOURCES), "topic_partitions": settings.topic_partitions,
        "target_events_per_s": args.target, "worker_env": args.worker_env,
        "settings": "EXECUTOR_ENABLED=false, STORE=rocksdb://, scaling and forecasting on (defaults), "
                    f"BRIDGE_ENABLED={'true' if args.via == 'pulsar' else 'false'}",
    }
    result["runs"] = [await one_count(args, stack, workdir, run, count) for count in args.workers]
    result["loadavg_at_end"] = loadavg()
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"via {result['via']}, {result['events']} events, {result['machine']['cpus']} cpus, load at start "
             f"{result['machine']['loadavg_at_start']}, at end {result['loadavg_at_end']}",
             "workers  events/s  CPU ms/event  events/s per core  workers for "
             f"{result['target_events_per_s']:.0f}/s  lost  dup  load after"]
    for r in result["runs"]:
        lines.append(f"{r['workers']:>7}  {r['events_per_s'] or float('nan'):>8.1f}  "
                     f"{r.get('cpu_ms_per_event', float('nan')):>12.2f}  "
                     f"{r.get('events_per_s_per_core', float('nan')):>17.1f}  "
                     f"{r.get('workers_for_target', '?'):>16}  {r['lost_events']:>4}  {r['duplicate_commands']:>3}  "
                     f"{r['loadavg_after']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4],
                        help="worker processes, one measurement per count (at most TOPIC_PARTITIONS do work)")
    parser.add_argument("--events", type=int, default=30_000, help="tenant-created events per measurement")
    parser.add_argument("--via", choices=("pulsar", "kafka"), default="pulsar",
                        help="pulsar: through the workers' bridge; kafka: straight to the Kafka topic")
    parser.add_argument("--target", type=float, default=1000.0, help="events/s to size the worker count for")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after every worker is ready")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the events")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last commands")
    parser.add_argument("--json", action="store_true", help="print the JSON result before the table")
    add_worker_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep the run's data dir (worker logs, Kafka data)")
    args = parser.parse_args()
    if args.profile:
        raise SystemExit("--profile is not supported here (several workers)")
    run_on_event_plane(args, run, "tenant_throughput", keep=args.keep, output=table, json_output=args.json)


if __name__ == "__main__":
    main()
