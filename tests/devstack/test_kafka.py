"""The real local Kafka (KRaft) accepts and delivers records through aiokafka."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

pytestmark = pytest.mark.integration


async def test_produce_and_consume_through_the_real_kafka(kafka_service: dict[str, str]) -> None:
    servers = kafka_service["KAFKA_BOOTSTRAP_SERVERS"]
    run = uuid.uuid4().hex
    topic = f"devstack-test-{run}"
    payloads = [f"tenant-created-{i}-{run}".encode() for i in range(3)]

    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for payload in payloads:
            await producer.send_and_wait(topic, payload, key=b"tenant-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"devstack-test-{run}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[ConsumerRecord[bytes, bytes]] = []
    try:

        async def collect() -> None:
            async for record in consumer:
                received.append(record)
                if len(received) == len(payloads):
                    return

        # A guard against a hang, not a latency assertion.
        await asyncio.wait_for(collect(), timeout=120)
        await consumer.commit()
        # The broker creates the topic with several partitions; one key lands in one of them.
        partition = TopicPartition(topic, received[0].partition)
        committed = await consumer.committed(partition)
    finally:
        await consumer.stop()

    assert [record.value for record in received] == payloads
    assert {record.key for record in received} == {b"tenant-1"}
    assert {record.topic for record in received} == {topic}
    assert {record.partition for record in received} == {partition.partition}
    assert committed == len(payloads)
