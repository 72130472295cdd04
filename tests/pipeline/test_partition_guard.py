"""On the real Kafka: the worker creates its topics with TOPIC_PARTITIONS, grows only topics that never held a
record, and refuses to start against topics whose records were placed under another partition count."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.bridge.topics import PartitionCountMismatch, ensure_kafka_topics
from pipeline.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(kafka_service: dict[str, str]) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_service["KAFKA_BOOTSTRAP_SERVERS"])
    await client.start()
    created: list[str] = []
    client.created = created  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        existing = set(await client.list_topics())
        leftover = [name for name in created if name in existing]
        if leftover:
            await client.delete_topics(leftover)
        await client.close()


def names(count: int) -> list[str]:
    run = uuid.uuid4().hex[:10]
    return [f"partition-guard-{run}-{i}" for i in range(count)]


async def partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}


async def create(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> None:
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.created.append(topic)  # type: ignore[attr-defined]


async def write_one(servers: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"acme")
    finally:
        await producer.stop()


async def test_missing_topics_are_created_and_empty_short_ones_grown(
    kafka_service: dict[str, str], admin: AIOKafkaAdminClient,
) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_service["KAFKA_BOOTSTRAP_SERVERS"], topic_partitions=4)
    fresh, short = names(2)
    admin.created.append(fresh)  # type: ignore[attr-defined]
    await create(admin, short, 2)

    await ensure_kafka_topics(settings, [fresh, short])

    assert await partition_counts(admin, [fresh, short]) == {fresh: 4, short: 4}


async def test_a_topic_holding_records_under_another_count_stops_the_start_unchanged(
    kafka_service: dict[str, str], admin: AIOKafkaAdminClient,
) -> None:
    servers = kafka_service["KAFKA_BOOTSTRAP_SERVERS"]
    settings = Settings(kafka_bootstrap_servers=servers, topic_partitions=4)
    used, empty = names(2)
    await create(admin, used, 2)
    await create(admin, empty, 2)
    await write_one(servers, used)

    with pytest.raises(PartitionCountMismatch) as refused:
        await ensure_kafka_topics(settings, [used, empty])

    assert refused.value.found == {used: 2}
    assert f"{used} (2)" in str(refused.value) and "TOPIC_PARTITIONS=4" in str(refused.value)
    # Nothing was grown: neither the topic with records, nor (the start being refused) the empty one.
    assert await partition_counts(admin, [used, empty]) == {used: 2, empty: 2}


async def test_a_topic_with_more_partitions_is_refused_even_when_empty(
    kafka_service: dict[str, str], admin: AIOKafkaAdminClient,
) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_service["KAFKA_BOOTSTRAP_SERVERS"], topic_partitions=2)
    (wide,) = names(1)
    await create(admin, wide, 4)

    with pytest.raises(PartitionCountMismatch) as refused:
        await ensure_kafka_topics(settings, [wide])

    assert refused.value.found == {wide: 4}
    assert await partition_counts(admin, [wide]) == {wide: 4}


async def test_two_workers_creating_the_same_fresh_topics_at_once_both_succeed(
    kafka_service: dict[str, str], admin: AIOKafkaAdminClient,
) -> None:
    # Two workers with a fresh APP_ID starting at the same moment: one may list a topic the other has just
    # created before Kafka describes it, and must neither fail nor try to grow it.
    settings = Settings(kafka_bootstrap_servers=kafka_service["KAFKA_BOOTSTRAP_SERVERS"], topic_partitions=3)
    for _round in range(3):
        topics = names(4)
        admin.created.extend(topics)  # type: ignore[attr-defined]

        await asyncio.gather(ensure_kafka_topics(settings, topics), ensure_kafka_topics(settings, topics))

        assert await partition_counts(admin, topics) == dict.fromkeys(topics, 3)
