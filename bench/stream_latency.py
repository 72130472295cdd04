"""Latency from a Pulsar publish to the provisioning command on Kafka, at a paced rate (default 1,000/s).

A fresh worker (``python -m pipeline worker``, bridge ON, executor OFF, fresh APP_ID, RocksDB tables, its
own bridge subscription created at the current end of every input topic, its Kafka groups committed at
the current end of every topic it reads) runs beside this process, which

1. reads ``provisioning-commands`` from its current end (every partition) and matches commands to our
   events by ``cause_event_id``;
2. publishes ``--warmup`` tenant-created events slowly and waits for their commands (not counted);
3. publishes ``--rate`` tenant-created events per second for ``--seconds`` seconds with pulsar-client
   (``send_async``, batching off, one new tenant per event, tiers round-robin), paced in 1 ms slots from
   a thread, and keeps reading until every event's commands (one per resource) arrived or ``--drain``
   seconds passed after the last publish.

Clock: the wall clock (CLOCK_REALTIME) of this one machine, read with ``time.time()``: the publish time
is read just before ``send_async``; the command's time is its Kafka record timestamp (CreateTime: the
worker's clock when its producer took the record, before the broker's ack). ``consumed`` adds the time
until this process read the command from Kafka. Per event: ``first`` = its first command, ``all`` = the
last of its commands. Also reported: the publish rate reached, the rate the worker emitted at, and the
median latency in the first and last tenth of the run (rising = the worker did not keep up: queueing).
Prints JSON.

    .venv/bin/python -m bench.stream_latency [--rate 1000] [--seconds 20] [--drain 180]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pulsar
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.stream_support import (
    Worker,
    commit_end_offsets,
    emit,
    loadavg,
    machine,
    percentile,
    run_id,
    stack_env,
    tenant_created,
    worker_env,
)
from pipeline.bridge import ensure_kafka_topics
from pipeline.config import Settings
from pipeline.outputs import PROVISIONING_COMMANDS
from pipeline.provisioners.base import RESOURCES
from pipeline.topics import INPUT_TOPICS, OUTPUT_TOPICS, TENANT_CREATED, kafka_topics

TIERS = ("free", "standard", "enterprise")


class Seen:
    """Commands seen per cause event: (count, first timestamp, last timestamp, last consume time)."""

    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        self.commands: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def complete(self, event_ids: list[str]) -> int:
        return sum(1 for e in event_ids if self.commands.get(e, [0])[0] >= len(RESOURCES))


def create_subscription(pulsar_url: str, namespace: str, subscription: str) -> None:
    """The bridge's subscription, at the current end of every input topic (not the shared backlog)."""
    client = pulsar.Client(pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        consumer = client.subscribe([f"persistent://{namespace}/{t}" for t in INPUT_TOPICS], subscription,
                                    consumer_type=pulsar.ConsumerType.KeyShared,
                                    initial_position=pulsar.InitialPosition.Latest)
        consumer.close()
    finally:
        client.close()


async def read_commands(bootstrap: str, seen: Seen, stop: asyncio.Event, ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(PROVISIONING_COMMANDS) or set()
        tps = [TopicPartition(PROVISIONING_COMMANDS, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batches.values():
                for record in records:
                    try:
                        cause = json.loads(record.value)["cause_event_id"]
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


def publish(pulsar_url: str, namespace: str, events: list[dict[str, Any]], rate: float, seen: Seen
            ) -> dict[str, Any]:
    """Send ``events`` at ``rate`` per second (1 ms slots), recording each publish time."""
    client = pulsar.Client(pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    producer = client.create_producer(f"persistent://{namespace}/{TENANT_CREATED}", batching_enabled=False,
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
            payload = json.dumps(event).encode()
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


async def wait_complete(seen: Seen, ids: list[str], timeout: float) -> int:
    """Wait until every event in ``ids`` has all its commands, or ``timeout`` seconds; how many do."""
    deadline = time.monotonic() + timeout
    done = seen.complete(ids)
    for _ in range(int(timeout / 0.2) + 1):
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack = stack_env()
    bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
    run = run_id()
    app_id = f"bench-lat-{run}"
    subscription = f"bench-lat-{run}"
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    namespace = settings.pulsar_namespace
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    result: dict[str, Any] = {
        "benchmark": "stream_latency", "machine": machine(), "run_id": run, "app_id": app_id,
        "event": TENANT_CREATED, "commands_per_event": len(RESOURCES), "rate_per_s": args.rate,
        "seconds": args.seconds,
        "clock": "wall clock (time.time) of this host; command time = Kafka record timestamp (CreateTime)",
    }
    await ensure_kafka_topics(settings, kafka_topics(settings.dead_letter_topic))
    await commit_end_offsets(bootstrap, app_id, kafka_topics(settings.dead_letter_topic))
    await commit_end_offsets(bootstrap, f"{app_id}-bridge-out", list(OUTPUT_TOPICS))
    await asyncio.to_thread(create_subscription, stack["PULSAR_URL"], namespace, subscription)
    worker = Worker(worker_env(stack, app_id, bridge=True, BRIDGE_SUBSCRIPTION=subscription), workdir)
    seen = Seen()
    stop, ready = asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(read_commands(bootstrap, seen, stop, ready))
    try:
        worker.start()
        result["worker_ready_s"] = round(await asyncio.to_thread(worker.wait_ready), 1)
        progress(f"worker ready: {worker.url}, log {worker.log_path}")
        await ready.wait()

        def events(prefix: str, count: int) -> list[dict[str, Any]]:
            return [tenant_created(f"bench-{run}-{prefix}{i}", f"bench-{run}-{prefix}{i}-created", TIERS[i % 3])
                    for i in range(count)]

        warm = events("w", args.warmup)
        await asyncio.to_thread(publish, stack["PULSAR_URL"], namespace, warm, 20, seen)
        progress(f"warm-up: {len(warm)} events published")
        result["warmup_complete"] = await wait_complete(seen, [e["event_id"] for e in warm], 120)
        progress(f"warm-up: {result['warmup_complete']} complete")

        measured = events("l", int(args.rate * args.seconds))
        cpu0 = worker.cpu_seconds()
        result["load_before"] = loadavg()
        result["publish"] = await asyncio.to_thread(publish, stack["PULSAR_URL"], namespace, measured, args.rate,
                                                    seen)
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
        await cleanup(bootstrap, app_id, stack["PULSAR_ADMIN_URL"], namespace, subscription)
        shutil.rmtree(workdir, ignore_errors=True)

    with seen.lock:
        complete = [e for e in ids if seen.commands.get(e, [0])[0] >= len(RESOURCES)]
        first = [seen.commands[e][1] - seen.published[e] for e in complete]
        last = [seen.commands[e][2] - seen.published[e] for e in complete]
        consumed = [seen.commands[e][3] - seen.published[e] for e in complete]
        stamps = sorted(seen.commands[e][2] for e in complete)
        extra = sum(max(0, seen.commands[e][0] - len(RESOURCES)) for e in complete)
    result["events_complete"] = len(complete)
    result["events_incomplete"] = len(ids) - len(complete)
    result["duplicate_commands"] = extra
    result["latency_first_command"] = summary(first)
    result["latency_all_commands"] = summary(last)
    result["latency_consumed"] = summary(consumed)
    if len(stamps) > 1:
        result["worker_emit_events_per_s"] = round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1)
        tenth = max(1, len(last) // 10)
        order = sorted(range(len(complete)), key=lambda i: seen.published[complete[i]])
        result["p50_all_ms_first_tenth"] = summary([last[i] for i in order[:tenth]]).get("p50_ms")
        result["p50_all_ms_last_tenth"] = summary([last[i] for i in order[-tenth:]]).get("p50_ms")
    return result


async def cleanup(bootstrap: str, app_id: str, admin_url: str, namespace: str, subscription: str) -> None:
    """Drop what this run created: its changelog topics and its bridge subscription."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"{app_id}-")]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()

    def unsubscribe() -> None:
        import urllib.error
        import urllib.request

        for topic in INPUT_TOPICS:
            url = f"{admin_url}/admin/v2/persistent/{namespace}/{topic}/subscription/{subscription}?force=true"
            try:
                urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10)  # noqa: S310
            except urllib.error.URLError:
                pass

    await asyncio.to_thread(unsubscribe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second published")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to publish at that rate")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--drain", type=float, default=180.0, help="seconds to wait for commands afterwards")
    emit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
