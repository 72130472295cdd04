"""The bridge's threads against a real Kafka broker (the module's own) and the shared Pulsar: what reaches
Kafka, what is acknowledged on Pulsar and when, dead letters, redelivery, the outbound commits, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pulsar
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, Producer, TopicPartition

from devstack.harness.tenant_provisioning import EventPlane
from pipeline.bridge.inbound import InboundForwarder, KafkaDeliveryFailed, forward_one
from pipeline.bridge.outbound import OUTBOUND_BATCH
from pipeline.bridge.service import Bridge
from pipeline.bridge.topics import pulsar_topic
from pipeline.config import Settings
from pipeline.events.models import DeadLetter

pytestmark = pytest.mark.integration

QUIET = pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def settings_of(plane: EventPlane, suffix: str) -> Settings:
    return Settings(kafka_bootstrap_servers=plane.bootstrap, pulsar_url=plane.pulsar_url,
                    pulsar_admin_url=plane.pulsar_admin_url, pulsar_namespace=plane.namespace,
                    app_id=f"it-bridge-{suffix}", bridge_subscription=f"bridge-{suffix}",
                    dead_letter_topic=f"dead-letters-{suffix}")


def event(tenant_id: str, n: int) -> bytes:
    return json.dumps({"event_id": f"e-{n}", "tenant_id": tenant_id, "occurred_at": "2026-03-01T10:00:00+00:00",
                       "n": n}).encode()


def publish(settings: Settings, topic: str, payloads: list[tuple[str, bytes]]) -> None:
    client = pulsar.Client(settings.pulsar_url, logger=QUIET)
    try:
        producer = client.create_producer(pulsar_topic(settings, topic))
        for key, payload in payloads:
            producer.send(payload, partition_key=key)
    finally:
        client.close()


def read_kafka(settings: Settings, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of ``topic`` (waits for them)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"reader-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + 90
    try:
        while len(records) < count and time.monotonic() < deadline:
            records += [r for r in consumer.consume(100, timeout=0.5) if r.error() is None]
    finally:
        consumer.close()
    assert len(records) >= count, f"{len(records)} of {count} records reached {topic}"
    return records


def backlog(settings: Settings, topic: str) -> int | None:
    """The bridge subscription's backlog (messages not acknowledged), from the Pulsar admin API."""
    url = (f"{settings.pulsar_admin_url}/admin/v2/persistent/{settings.pulsar_namespace}/{topic}/stats")
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the local admin URL
        stats = json.load(response)
    subscription = stats.get("subscriptions", {}).get(settings.bridge_subscription)
    return None if subscription is None else int(subscription["msgBacklog"])


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("bridge-inbound", "bridge-outbound")]


async def test_inbound_forwards_keyed_and_timestamped_acknowledges_and_stops_cleanly(event_plane: EventPlane) -> None:
    settings = settings_of(event_plane, "in")
    topic, other = "bridge-it-in", "bridge-it-in-other"
    payloads = [(f"tenant-{n % 7}", event(f"tenant-{n % 7}", n)) for n in range(50)]
    publish(settings, topic, payloads)
    publish(settings, other, payloads[:5])
    bridge = Bridge(settings, inbound=[topic, other], outbound=[])
    await bridge.start()
    try:
        records = read_kafka(settings, topic, 50)
        assert sorted(r.value() for r in read_kafka(settings, other, 5)) == sorted(p for _, p in payloads[:5])
        # Every message acknowledged on Pulsar (after Kafka's acknowledgement, see the unit tests), on each topic.
        wait_for(lambda: backlog(settings, topic) == 0 and backlog(settings, other) == 0,
                 "the bridge subscription to have no backlog")
    finally:
        await bridge.stop()
    assert bridge_threads() == []  # both directions' threads ended: nothing left running after stop
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.topic_partitions))
    by_value = {r.value(): r for r in records}
    assert sorted(by_value) == sorted(p for _, p in payloads)
    for key, payload in payloads:
        record = by_value[payload]
        assert record.key() == key.encode()
        assert record.timestamp()[1] == int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)
        # The partition aiokafka (the worker's producer, Faust's tables) picks for the same key.
        assert record.partition() == partitioner(key.encode(), partitions, partitions)


async def test_a_record_kafka_refuses_is_dead_lettered_and_the_topic_moves_on(event_plane: EventPlane) -> None:
    settings = settings_of(event_plane, "refused")
    topic = "bridge-it-refused"
    # A topic whose records may not exceed 2,000 bytes: a 20-KB event (well under what the service accepts) is
    # refused by the broker for its size, on every try.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.topic_partitions, 1,
                                            topic_configs={"max.message.bytes": "2000"})])
    finally:
        await admin.close()
    big = json.dumps({"event_id": "big", "tenant_id": "acme", "occurred_at": "2026-03-01T10:00:00+00:00",
                      "junk": "x" * 20_000}).encode()
    publish(settings, topic, [("acme", big), ("acme", event("acme", 1))])
    bridge = Bridge(settings, inbound=[topic], outbound=[])
    await bridge.start()
    try:
        letters = read_kafka(settings, settings.dead_letter_topic, 1)
        forwarded = read_kafka(settings, topic, 1)
        wait_for(lambda: backlog(settings, topic) == 0, "both messages acknowledged")
    finally:
        await bridge.stop()
    letter = DeadLetter.model_validate_json(letters[0].value())
    assert (letter.reason, letter.source_topic, letter.original_length) == ("unforwardable", topic, len(big))
    assert letters[0].key() == b"acme"
    assert [r.value() for r in forwarded] == [event("acme", 1)]


async def test_a_record_refused_for_its_timestamp_is_dead_lettered_and_the_topic_moves_on(
    event_plane: EventPlane,
) -> None:
    settings = settings_of(event_plane, "old")
    topic = "bridge-it-old"
    # A topic that takes no record timestamped more than an hour ago: an event that occurred long ago (the record
    # timestamp is its occurred_at) is refused for its timestamp (INVALID_TIMESTAMP), on every try.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.topic_partitions, 1,
                                            topic_configs={"message.timestamp.before.max.ms": "3600000"})])
    finally:
        await admin.close()
    old = event("acme", 0)  # occurred_at 2026-03-01
    recent = json.dumps({"event_id": "e-1", "tenant_id": "acme", "occurred_at": datetime.now(UTC).isoformat(),
                         "n": 1}).encode()
    publish(settings, topic, [("acme", old), ("acme", recent)])
    bridge = Bridge(settings, inbound=[topic], outbound=[])
    await bridge.start()
    try:
        letters = read_kafka(settings, settings.dead_letter_topic, 1)
        forwarded = read_kafka(settings, topic, 1)
        wait_for(lambda: backlog(settings, topic) == 0, "both messages acknowledged")
    finally:
        await bridge.stop()
    letter = DeadLetter.model_validate_json(letters[0].value())
    assert (letter.reason, letter.source_topic, letter.original_length) == ("unforwardable", topic, len(old))
    assert "timestamp" in letter.detail.lower()
    assert [r.value() for r in forwarded] == [recent]


def test_a_transient_kafka_failure_is_redelivered_and_forwarded_later(event_plane: EventPlane) -> None:
    """No broker answers the first producer: its deliveries time out, nothing is acknowledged, Pulsar
    redelivers the messages, and the second producer (the real broker) forwards them."""
    settings = settings_of(event_plane, "transient")
    topic = "bridge-it-transient"
    payloads = [("acme", event("acme", n)) for n in range(5)]
    publish(settings, topic, payloads)
    client = pulsar.Client(settings.pulsar_url, logger=QUIET)
    try:
        consumer = client.subscribe(pulsar_topic(settings, topic), settings.bridge_subscription,
                                    consumer_type=pulsar.ConsumerType.Failover,
                                    initial_position=pulsar.InitialPosition.Earliest,
                                    negative_ack_redelivery_delay_ms=500)
        nowhere = Producer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 1000, "acks": "all",
                            "enable.idempotence": True})
        failing = InboundForwarder(consumer, nowhere, settings.dead_letter_topic)
        first = [consumer.receive(30_000) for _ in payloads]
        for message in first:
            forward_one(failing, message)

        def reported() -> bool:
            with contextlib.suppress(KafkaDeliveryFailed):
                failing.serve(0.2)
            return failing.undelivered == 0

        wait_for(reported, "the deliveries to fail")
        with pytest.raises(KafkaDeliveryFailed):  # what restarts the direction
            failing.serve()
        real = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all",
                         "enable.idempotence": True})
        forwarder = InboundForwarder(consumer, real, settings.dead_letter_topic)
        again = [consumer.receive(30_000) for _ in payloads]  # redelivered: they were never acknowledged
        assert sorted(m.message_id().serialize() for m in again) == sorted(m.message_id().serialize() for m in first)
        for message in again:
            forward_one(forwarder, message)
        forwarder.close()
        assert forwarder.undelivered == 0
        consumer.close()
    finally:
        client.close()
    records = read_kafka(settings, topic, 5)
    assert sorted(r.value() for r in records) == sorted(p for _, p in payloads)


async def test_outbound_commits_after_pulsar_acknowledged(event_plane: EventPlane) -> None:
    COUNT = 2 * OUTBOUND_BATCH + 500  # several batches, more than a Pulsar producer's default queue
    settings = settings_of(event_plane, "out")
    topic = "bridge-it-out"
    client = pulsar.Client(settings.pulsar_url, logger=QUIET)
    try:
        # Subscribed before the bridge writes, so every message it sends is kept for this reader.
        reader = client.subscribe(pulsar_topic(settings, topic), "reader",
                                  initial_position=pulsar.InitialPosition.Earliest)
        bridge = Bridge(settings, inbound=[], outbound=[topic])
        await bridge.start()  # creates the Kafka topic
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        for n in range(COUNT):
            producer.produce(topic, event(f"tenant-{n % 4}", n), f"tenant-{n % 4}".encode())
        assert producer.flush(60) == 0
        group = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                          "group.id": f"{settings.app_id}-bridge-out"})

        def committed() -> int:
            partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
            return sum(max(tp.offset, 0) for tp in group.committed(partitions, timeout=30))

        try:
            wait_for(lambda: committed() == COUNT, "the bridge to commit every record")
        finally:
            group.close()
            await bridge.stop()
        received = [reader.receive(30_000) for _ in range(COUNT)]
        assert sorted(m.data() for m in received) == sorted(event(f"tenant-{n % 4}", n) for n in range(COUNT))
        assert {m.partition_key() for m in received} == {f"tenant-{n}" for n in range(4)}
    finally:
        client.close()
    assert bridge_threads() == []


async def test_run_forever_stops_cleanly_when_cancelled(event_plane: EventPlane) -> None:
    """``python -m pipeline bridge`` runs ``run_forever`` under ``asyncio.run``: Ctrl-C cancels it."""
    settings = settings_of(event_plane, "forever")
    bridge = Bridge(settings, inbound=["bridge-it-forever"], outbound=["bridge-it-forever-out"])
    task = asyncio.create_task(bridge.run_forever())
    for _ in range(450):  # start creates the topics first: up to 90 s
        if len(bridge_threads()) == 2:
            break
        await asyncio.sleep(0.2)
    assert {t.name for t in bridge_threads()} == {"bridge-inbound", "bridge-outbound"}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert bridge_threads() == []
