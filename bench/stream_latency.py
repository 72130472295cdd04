"""Latency from a Pulsar publish to the provisioning command on Kafka, at a paced rate (default 1,000/s).

On an event plane of its own (a Kafka broker started for the run, a fresh Pulsar namespace: see
``bench/stream_support.py``), a worker (``python -m pipeline worker``, bridge ON, executor OFF, RocksDB
tables) runs beside this process, which

1. reads ``provisioning-commands`` (and the bridged ``tenant-created-events``) on Kafka and matches
   commands to our events by ``cause_event_id``;
2. publishes ``--warmup`` tenant-created events slowly and waits for their commands (not counted);
3. publishes ``--rate`` tenant-created events per second for ``--seconds`` seconds with pulsar-client
   (``send_async``, batching off, one new tenant per event, tiers round-robin), paced in 1 ms slots from
   a thread, with ``--metrics-rate`` resource-metrics events per second of the warm-up tenants from
   another thread (real NAB CPU series; the rest of a platform's traffic), and keeps reading until
   every event's commands (one per resource) arrived or ``--drain`` seconds passed after the last publish.

Clock: the wall clock (CLOCK_REALTIME) of this one machine, read with ``time.time()``: the publish time
is read just before ``send_async``; the command's time is its Kafka record timestamp (CreateTime: the
worker's clock when its producer took the record, before the broker's ack). ``consumed`` adds the time
until this process read the command from Kafka; ``bridged_consumed`` is the time until this process
read the bridged event itself from the Kafka input topic (the bridge's share, plus a Kafka fetch).
Per event: ``first`` = its first command, ``all`` = the last of its commands. Also reported: the
publish rate reached, the rate the worker emitted at, and the median latency in each tenth of the run
(rising = the worker did not keep up: queueing).
Prints JSON.

    .venv/bin/python -m bench.stream_latency [--rate 1000] [--metrics-rate 0] [--seconds 20] [--drain 180]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulsar
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.stream_support import (
    Worker,
    add_worker_arguments,
    extra_worker_env,
    loadavg,
    machine,
    metric_events,
    percentile,
    run_id,
    run_on_event_plane,
    tenant_created,
    worker_env,
)
from pipeline.bridge.topics import ensure_kafka_topics
from pipeline.config import Settings
from pipeline.contract.topics import PROVISIONING_COMMANDS, RESOURCE_METRICS, TENANT_CREATED, kafka_topics
from pipeline.provisioners.base import RESOURCES

TIERS = ("free", "standard", "enterprise")


class Seen:
    """Commands seen per cause event: (count, first timestamp, last timestamp, last consume time)."""

    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        self.commands: dict[str, list[float]] = {}
        #: When this process read the bridged event from the Kafka input topic.
        self.bridged: dict[str, float] = {}
        self.lock = threading.Lock()

    def complete(self, event_ids: list[str]) -> int:
        return sum(1 for e in event_ids if self.commands.get(e, [0])[0] >= len(RESOURCES))


async def read_commands(bootstrap: str, seen: Seen, stop: asyncio.Event, ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = []
        for topic in (PROVISIONING_COMMANDS, TENANT_CREATED):
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                raise SystemExit(f"{topic} has no partitions")
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for tp, records in batches.items():
                for record in records:
                    try:
                        value = json.loads(record.value)
                        if tp.topic == TENANT_CREATED:
                            with seen.lock:
                                seen.bridged.setdefault(value["event_id"], now)
                            continue
                        cause = value["cause_event_id"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    with seen.lock:
                        if cause not in seen.published:
                            continue
                        stamp = record.timestamp / 1000
                        entry = seen.commands.setdefault(cause, [0, stamp, stamp, now])
                        entry[0] += 1
                        entry[1], entry[2], entry[3] = min(entry[1], stamp), max(entry[2], stamp), now
    finally:
        await consumer.stop()


def publish(pulsar_url: str, namespace: str, events: list[dict[str, Any]], rate: float, seen: Seen | None,
            topic: str = TENANT_CREATED) -> dict[str, Any]:
    """Send ``events`` to ``topic`` at ``rate`` per second (1 ms slots), recording each publish time in
    ``seen`` (if given)."""
    client = pulsar.Client(pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    producer = client.create_producer(f"persistent://{namespace}/{topic}", batching_enabled=False,
                                      block_if_queue_full=True, max_pending_messages=100_000)
    failures = 0

    def done(result: pulsar.Result, _msg_id: Any) -> None:
        nonlocal failures
        if result != pulsar.Result.Ok:
            failures += 1

    started = time.perf_counter()
    late_ms: list[float] = []
    try:
        for i, event in enumerate(events):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0.001:
                time.sleep(delay)
            late_ms.append(max(0.0, time.perf_counter() - due) * 1000)
            payload = json.dumps({**event, "occurred_at": datetime.now(UTC).isoformat()}).encode()
            if seen is not None:
                with seen.lock:
                    seen.published[event["event_id"]] = time.time()
            producer.send_async(payload, done, partition_key=event["tenant_id"])
        producer.flush()
        elapsed = time.perf_counter() - started
    finally:
        producer.close()
        client.close()
    return {"events": len(events), "seconds": round(elapsed, 3), "events_per_s": round(len(events) / elapsed, 1),
            "send_failures": failures, "schedule_late_ms_p99": round(percentile(sorted(late_ms), 99), 2)}


def progress(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


async def wait_complete(seen: Seen, ids: list[str], seconds: float) -> int:
    """Wait until every event in ``ids`` has all its commands, or ``seconds``; how many do."""
    deadline = time.monotonic() + seconds
    done = seen.complete(ids)
    for _ in range(int(seconds / 0.2) + 1):
        done = seen.complete(ids)
        if done >= len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    return done


def summary(values_s: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1000 for v in values_s)
    if not ordered:
        return {}
    return {"p50_ms": round(percentile(ordered, 50), 1), "p90_ms": round(percentile(ordered, 90), 1),
            "p99_ms": round(percentile(ordered, 99), 1), "max_ms": round(ordered[-1], 1),
            "mean_ms": round(statistics.fmean(ordered), 1)}


async def run(args: argparse.Namespace, stack: dict[str, str], workdir: Path) -> dict[str, Any]:
    bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
    namespace = stack["PULSAR_NAMESPACE"]
    run = run_id()
    app_id = f"bench-lat-{run}"
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    result: dict[str, Any] = {
        "benchmark": "stream_latency", "machine": machine(), "run_id": run, "app_id": app_id,
        "event": TENANT_CREATED, "commands_per_event": len(RESOURCES), "rate_per_s": args.rate,
        "metrics_rate_per_s": args.metrics_rate, "worker_env": args.worker_env,
        "seconds": args.seconds,
        "clock": "wall clock (time.time) of this host; command time = Kafka record timestamp (CreateTime)",
    }
    await ensure_kafka_topics(settings, kafka_topics(settings.dead_letter_topic))
    worker = Worker(worker_env(stack, app_id, bridge=True, **extra_worker_env(args)),
                    workdir,
                    python_args=["-m", "cProfile", "-o", str(args.profile)] if args.profile else [],
                    cwd=args.worker_root)
    seen = Seen()
    stop, ready = asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(read_commands(bootstrap, seen, stop, ready))
    try:
        worker.start()
        result["worker_ready_s"] = round(await asyncio.to_thread(worker.wait_ready), 1)
        progress(f"worker ready: {worker.url}, log {worker.log_path}")
        await asyncio.wait([reader, asyncio.ensure_future(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            reader.result()  # raises what stopped it

        def events(prefix: str, count: int) -> list[dict[str, Any]]:
            return [tenant_created(f"bench-{run}-{prefix}{i}", f"bench-{run}-{prefix}{i}-created", TIERS[i % 3])
                    for i in range(count)]

        warm = events("w", args.warmup)
        await asyncio.to_thread(publish, stack["PULSAR_URL"], namespace, warm, 20, seen)
        progress(f"warm-up: {len(warm)} events published")
        result["warmup_complete"] = await wait_complete(seen, [e["event_id"] for e in warm], 120)
        progress(f"warm-up: {result['warmup_complete']} complete")

        measured = events("l", int(args.rate * args.seconds))
        # the other traffic: resource-metrics of the warm-up tenants, published beside the measured events
        samples = [json.loads(value) for _, value in metric_events(
            run, [e["tenant_id"] for e in warm], int(args.metrics_rate * args.seconds))]
        cpu0 = worker.cpu_seconds()
        result["load_before"] = loadavg()
        publishing = [asyncio.to_thread(publish, stack["PULSAR_URL"], namespace, measured, args.rate, seen)]
        if samples:
            publishing.append(asyncio.to_thread(publish, stack["PULSAR_URL"], namespace, samples,
                                                args.metrics_rate, None, RESOURCE_METRICS))
        result["publish"], *metrics_publish = await asyncio.gather(*publishing)
        if metrics_publish:
            result["publish_metrics"] = metrics_publish[0]
        ids = [e["event_id"] for e in measured]
        progress(f"published {len(ids)} events: {result['publish']}")
        await wait_complete(seen, ids, args.drain)
        progress(f"{seen.complete(ids)} of {len(ids)} complete")
        result["cpu_s_worker"] = round(worker.cpu_seconds() - cpu0, 1)
        result["loadavg_after"] = loadavg()
    finally:
        stop.set()
        await reader
        worker.stop()

    with seen.lock:
        complete = [e for e in ids if seen.commands.get(e, [0])[0] >= len(RESOURCES)]
        first = [seen.commands[e][1] - seen.published[e] for e in complete]
        last = [seen.commands[e][2] - seen.published[e] for e in complete]
        consumed = [seen.commands[e][3] - seen.published[e] for e in complete]
        bridged = [seen.bridged[e] - seen.published[e] for e in complete if e in seen.bridged]
        stamps = sorted(seen.commands[e][2] for e in complete)
        extra = sum(max(0, seen.commands[e][0] - len(RESOURCES)) for e in complete)
    result["events_complete"] = len(complete)
    result["events_incomplete"] = len(ids) - len(complete)
    result["duplicate_commands"] = extra
    result["latency_first_command"] = summary(first)
    result["latency_all_commands"] = summary(last)
    result["latency_consumed"] = summary(consumed)
    result["latency_bridged_consumed"] = summary(bridged)
    if len(stamps) > 1:
        result["worker_emit_events_per_s"] = round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1)
        tenth = max(1, len(last) // 10)
        order = sorted(range(len(complete)), key=lambda i: seen.published[complete[i]])
        result["p50_all_ms_by_tenth"] = [summary([last[i] for i in order[k * tenth:(k + 1) * tenth]]).get("p50_ms")
                                         for k in range(10)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second published")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to publish at that rate")
    parser.add_argument("--metrics-rate", type=float, default=0.0,
                        help="resource-metrics events per second published beside them (the rest of the traffic)")
    parser.add_argument("--warmup", type=int, default=50)
    add_worker_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep the run's data dir (worker log, Kafka data)")
    parser.add_argument("--drain", type=float, default=180.0, help="seconds to wait for commands afterwards")
    args = parser.parse_args()
    run_on_event_plane(args, run, "stream_latency", keep=args.keep)


if __name__ == "__main__":
    main()
