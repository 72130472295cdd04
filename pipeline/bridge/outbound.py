"""Kafka -> Pulsar: the service's output topics copied to Pulsar, Kafka offsets committed after Pulsar's acks."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pulsar
from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.bridge.clients import kafka_client_config
from pipeline.bridge.routes import Route
from pipeline.bridge.topics import pulsar_topic
from pipeline.config import Settings

logger = logging.getLogger(__name__)


#: Kafka records the outbound direction reads at once, sends to Pulsar, and commits after Pulsar's acks.
OUTBOUND_BATCH = 1000


class _Sent:
    """Pulsar's answers to a batch of sends, from the client's threads."""

    def __init__(self) -> None:
        self._done = threading.Condition()
        self.pending = 0
        self.failures: list[str] = []

    def add(self) -> None:
        with self._done:
            self.pending += 1

    def callback(self, result: pulsar.Result, _message_id: Any) -> None:
        with self._done:
            self.pending -= 1
            if result != pulsar.Result.Ok:
                self.failures.append(str(result))
            self._done.notify_all()

    def wait(self, stopping: threading.Event) -> bool:
        """Whether every send was answered (False when stopping first)."""
        with self._done:
            while self.pending and not stopping.is_set():
                self._done.wait(0.2)
            return not self.pending


def outbound_offsets(records: Sequence[Any]) -> list[TopicPartition]:
    """The offsets to commit after ``records`` (Kafka messages) were all acknowledged by Pulsar: per partition,
    the one after the last record."""
    last: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic(), record.partition())
        last[key] = max(last.get(key, -1), record.offset())
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


def copy_to_pulsar(settings: Settings, client: pulsar.Client, topics: Sequence[str], stopping: threading.Event) -> None:
    """Copy ``topics`` from Kafka to the same-named Pulsar topics until ``stopping`` is set: a batch of records
    sent, every send acknowledged by Pulsar, then their offsets committed (a failure raises: the direction
    restarts and reads again from the last commit)."""
    consumer = Consumer(kafka_client_config(
        settings, **{
            "group.id": f"{settings.app_id}-bridge-out",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    ))
    producers: dict[str, pulsar.Producer] = {}
    routes: dict[str, Route] = {}
    consumer.subscribe(list(topics))
    try:
        while not stopping.is_set():
            records = [r for r in consumer.consume(num_messages=OUTBOUND_BATCH, timeout=0.5) if _usable(r)]
            if not records:
                continue
            sent = _Sent()
            for record in records:
                topic = record.topic()
                assert topic is not None  # a record (not an error event) always has its topic
                producer = producers.get(topic)
                if producer is None:
                    # Room for a whole consumed batch: send_async never has to wait for queue space.
                    producer = producers[topic] = client.create_producer(
                        pulsar_topic(settings, topic), batching_enabled=True, block_if_queue_full=True,
                        max_pending_messages=2 * OUTBOUND_BATCH,
                    )
                    routes[topic] = Route("kafka-to-pulsar", topic)
                key = record.key()
                sent.add()
                producer.send_async(record.value() or b"", sent.callback,
                                    partition_key=key.decode("utf-8", "replace") if key else None)
                route = routes[topic]
                route.count += 1
                route.last_publish_ms = record.timestamp()[1]
            for producer in producers.values():
                producer.flush()
            if not sent.wait(stopping):
                return  # stopping: nothing committed, the batch is read again by the next bridge
            if sent.failures:
                raise RuntimeError(f"Pulsar refused {len(sent.failures)} messages: {sent.failures[0]}")
            # Only now: every record up to these offsets is acknowledged by Pulsar.
            consumer.commit(offsets=outbound_offsets(records), asynchronous=False)
            for route in routes.values():
                route.publish()
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
        for producer in producers.values():
            with contextlib.suppress(Exception):
                producer.close()


def _usable(record: Any) -> bool:
    """Whether a consumed item is a record (not an error event); a fatal consumer error raises, which restarts
    the direction."""
    error = record.error()
    if error is None:
        return True
    if error.fatal():
        raise KafkaException(error)
    logger.warning("bridge: Kafka consumer error: %s", error.str())
    return False
