"""Messages per second Pulsar -> Kafka through ``pipeline.bridge.Bridge``, beside bare pulsar-client receive
loops (receive + acknowledge, no Kafka) over the same messages, in the same run.

On an event plane of its own (a Kafka broker started for the run and a fresh Pulsar namespace, see
``bench/stream_support.py``), ``--messages`` resource-metrics events (NAB's real AWS CloudWatch CPU
series, ~245 bytes, keyed by tenant) are published once on a dedicated topic. Then each pass reads all of
them through a subscription of its own, from the earliest message:

* ``bare_sync``: pulsar-client's blocking ``receive()`` + ``acknowledge()`` loop (in a thread), the client
  API the bridge's inbound thread uses;
* ``bare_asyncio``: the same with ``pulsar.asyncio`` (``await receive()``, ``await acknowledge()``), what an
  asyncio bridge would use; both with the same subscription type (KeyShared) and receiver queue (2,000);
* ``bridge``: ``Bridge(settings, inbound=[topic], outbound=[])`` in this process (its inbound thread):
  produce to Kafka with librdkafka (acks=all, idempotent), acknowledge on Pulsar only after Kafka's delivery
  report; rate from its ``provisioning_bridge_forwarded_total`` counter (polled every 50 ms; the bridge
  updates it every 256 messages); ``kafka_records_written`` counts what reached Kafka (the topic is
  created, with a probe record per partition, before the passes).

Order: bare_sync, bare_asyncio, bridge, bare_sync, bare_asyncio (drift shows). Rate = messages / (time of
the last one - time of the first one); CPU = this process (all threads, the client's C++ threads
included) per 1,000 messages. Prints JSON.

    .venv/bin/python -m bench.bridge_throughput [--messages 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pulsar
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from pulsar import asyncio as pulsar_asyncio

from bench.stream_support import (
    end_offsets,
    loadavg,
    machine,
    metric_events,
    run_id,
    run_on_event_plane,
    tenant_ids,
)
from pipeline.bridge.service import MAX_IN_FLIGHT, Bridge
from pipeline.bridge.topics import ensure_kafka_topics, pulsar_topic
from pipeline.config import Settings

QUIET = pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)


def publish(url: str, topic: str, records: list[tuple[str, bytes]]) -> float:
    client = pulsar.Client(url, logger=QUIET)
    producer = client.create_producer(topic, block_if_queue_full=True, batching_enabled=True,
                                      batching_type=pulsar.BatchingType.KeyBased)
    started = time.perf_counter()
    try:
        for key, value in records:
            producer.send_async(value, None, partition_key=key)
        producer.flush()
    finally:
        client.close()
    return time.perf_counter() - started


def result_of(count: int, first: float, last: float, cpu: float) -> dict[str, Any]:
    seconds = last - first
    return {"messages": count, "seconds": round(seconds, 3), "messages_per_s": round(count / seconds, 1),
            "cpu_s_per_1k_messages": round(cpu / count * 1000, 4), "loadavg_after": loadavg()}


def bare_sync(url: str, topic: str, subscription: str, total: int) -> dict[str, Any]:
    client = pulsar.Client(url, logger=QUIET)
    consumer = client.subscribe(topic, subscription, consumer_type=pulsar.ConsumerType.KeyShared,
                                initial_position=pulsar.InitialPosition.Earliest, receiver_queue_size=MAX_IN_FLIGHT)
    cpu0 = time.process_time()
    first = 0.0
    try:
        for n in range(total):
            message = consumer.receive()
            if n == 0:
                first = time.perf_counter()
            consumer.acknowledge(message)
        last = time.perf_counter()
        return result_of(total - 1, first, last, time.process_time() - cpu0)
    finally:
        consumer.close()
        client.close()


async def bare_asyncio(url: str, topic: str, subscription: str, total: int) -> dict[str, Any]:
    client = pulsar_asyncio.Client(url, logger=QUIET)
    consumer = await client.subscribe(topic, subscription, consumer_type=pulsar.ConsumerType.KeyShared,
                                      initial_position=pulsar.InitialPosition.Earliest,
                                      receiver_queue_size=MAX_IN_FLIGHT)
    cpu0 = time.process_time()
    first = 0.0
    try:
        for n in range(total):
            message = await consumer.receive()
            if n == 0:
                first = time.perf_counter()
            await consumer.acknowledge(message)
        last = time.perf_counter()
        return result_of(total - 1, first, last, time.process_time() - cpu0)
    finally:
        await consumer.close()
        await client.close()


async def bridge_pass(settings: Settings, name: str, total: int, limit_s: float) -> dict[str, Any]:
    labels = {"direction": "pulsar-to-kafka", "topic": name}

    def forwarded() -> float:
        return REGISTRY.get_sample_value("provisioning_bridge_forwarded_total", labels) or 0.0

    base = forwarded()
    bridge = Bridge(settings, inbound=[name], outbound=[])
    cpu0 = time.process_time()
    await bridge.start()
    first: tuple[float, float] | None = None
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            count = forwarded() - base
            now = time.perf_counter()
            if first is None and count > 0:
                first = (now, count)
            if count >= total:
                assert first is not None
                return result_of(int(count - first[1]), first[0], now, time.process_time() - cpu0)
            await asyncio.sleep(0.05)
        raise SystemExit(f"the bridge forwarded {count} of {total} in {limit_s:.0f} s")
    finally:
        await bridge.stop()


async def warm_kafka_topic(settings: Settings, name: str) -> None:
    """Create the Kafka topic and write one probe record per partition, so every partition has a leader
    before the bridge's pass (its records are not counted)."""
    await ensure_kafka_topics(settings, [name])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition in range(settings.topic_partitions):
            await producer.send_and_wait(name, b"{}", partition=partition)
    finally:
        await producer.stop()


async def run(args: argparse.Namespace, stack: dict[str, str], _workdir: Path) -> dict[str, Any]:
    run = run_id()
    name = f"bench-bridge-{run}"
    url = stack["PULSAR_URL"]
    settings = Settings(kafka_bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"], pulsar_url=url,
                        pulsar_namespace=stack["PULSAR_NAMESPACE"], bridge_subscription=f"bridge-{run}")
    topic = pulsar_topic(settings, name)
    records = list(metric_events(run, tenant_ids(run, args.tenants), args.messages))
    result: dict[str, Any] = {
        "benchmark": "bridge_throughput", "machine": machine(), "run_id": run, "pulsar_topic": topic,
        "messages": args.messages, "bytes_per_message": round(sum(len(v) for _, v in records) / len(records), 1),
    }
    result["publish_s"] = round(await asyncio.to_thread(publish, url, topic, records), 2)
    await warm_kafka_topic(settings, name)
    runs: list[dict[str, Any]] = []
    for i, kind in enumerate(["bare_sync", "bare_asyncio", "bridge", "bare_sync", "bare_asyncio"]):
        subscription = f"{kind}-{i}-{run}"
        if kind == "bare_sync":
            measured = await asyncio.to_thread(bare_sync, url, topic, subscription, args.messages)
        elif kind == "bare_asyncio":
            measured = await bare_asyncio(url, topic, subscription, args.messages)
        else:
            before = sum((await end_offsets(settings.kafka_bootstrap_servers, name)).values())
            measured = await bridge_pass(settings, name, args.messages, args.timeout)
            after = sum((await end_offsets(settings.kafka_bootstrap_servers, name)).values())
            measured["kafka_records_written"] = after - before
        runs.append({"kind": kind, **measured})
    result["runs"] = runs

    def mean(kind: str) -> float:
        rates: list[float] = [r["messages_per_s"] for r in runs if r["kind"] == kind]
        return round(sum(rates) / len(rates), 1)

    bridge_rate = mean("bridge")
    result["bridge_messages_per_s"] = bridge_rate
    result["bare_sync_messages_per_s"] = mean("bare_sync")
    result["bare_asyncio_messages_per_s"] = mean("bare_asyncio")
    result["ratio_bridge_to_bare_sync"] = round(bridge_rate / result["bare_sync_messages_per_s"], 3)
    result["ratio_bridge_to_bare_asyncio"] = round(bridge_rate / result["bare_asyncio_messages_per_s"], 3)
    result["loadavg_at_end"] = loadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=20, help="distinct keys (tenant ids)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run_on_event_plane(args, run, "bridge_throughput")


if __name__ == "__main__":
    main()
