"""The Pulsar <-> Kafka bridge.

Inbound: platform events on Pulsar topics are produced to Kafka topics of the same name, keyed by tenant
id, with the event's ``occurred_at`` as the record timestamp. A Pulsar message is acknowledged only after
Kafka acknowledged the write, so a bridge that dies in between loses nothing (Pulsar redelivers; the
agents deduplicate by event id).

A message that can never be written to Kafka (larger than the service accepts, or refused by Kafka for its
content) is replaced by a bounded dead letter on the dead-letter topic, and acknowledged once that is
written: one message never blocks the ones behind it. Unreadable messages of acceptable size are forwarded
as they are and dead-lettered by the agents' decoder, with the precise reason.

Outbound: the service's output topics are copied from Kafka to Pulsar; Kafka offsets are committed only
after Pulsar acknowledged every message up to them.

Runs inside the worker as a Faust service, or alone with ``python -m pipeline bridge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pulsar
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError
from pulsar import asyncio as pulsar_asyncio

from pipeline import bounded_json
from pipeline.config import Settings
from pipeline.connections import aiokafka_security, pulsar_client_options
from pipeline.contract.topics import INPUT_TOPICS, OUTPUT_TOPICS
from pipeline.events.dead_letters import dead_letter_record
from pipeline.events.dead_letters import kafka_key as dead_letter_key
from pipeline.events.models import TENANT_ID_PATTERN
from pipeline.metrics import BRIDGE_FORWARDED, BRIDGE_LAG_SECONDS, DEAD_LETTERS

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2000
_TENANT_ID = re.compile(TENANT_ID_PATTERN)
#: Kafka record timestamps are non-negative milliseconds; later than year 9999 is no event time.
_MAX_TIMESTAMP_MS = 253_402_300_799_999


def pulsar_topic(settings: Settings, name: str) -> str:
    return f"persistent://{settings.pulsar_namespace}/{name}"


def kafka_key_and_timestamp(payload: bytes, pulsar_key: str | None) -> tuple[bytes | None, int | None]:
    """The tenant id to key the Kafka record by, and ``occurred_at`` in ms (None when unreadable).

    An unreadable payload is still forwarded (the agents dead-letter it with its reason), keyed by the
    Pulsar message key when there is one.
    """
    key = dead_letter_key(pulsar_key) if pulsar_key else None
    try:
        event = bounded_json.loads(payload)  # never raises anything else, whatever the payload
    except bounded_json.JsonRefused:
        return key, None
    if not isinstance(event, dict):
        return key, None
    tenant_id = event.get("tenant_id")
    if isinstance(tenant_id, str) and _TENANT_ID.fullmatch(tenant_id):
        key = tenant_id.encode()
    timestamp = None
    occurred_at = event.get("occurred_at")
    if isinstance(occurred_at, str) and len(occurred_at) <= 64:
        with contextlib.suppress(ValueError, OverflowError, OSError):
            parsed = datetime.fromisoformat(occurred_at)
            if parsed.tzinfo is not None:
                millis = int(parsed.timestamp() * 1000)
                if 0 <= millis <= _MAX_TIMESTAMP_MS:
                    timestamp = millis
    return key, timestamp


@dataclass(frozen=True)
class KafkaRecord:
    """What the bridge writes to Kafka for one Pulsar message."""

    topic: str
    value: bytes
    key: bytes | None
    timestamp_ms: int | None


def dead_letter_instead(
    dead_letter_topic: str, source_topic: str, payload: bytes, pulsar_key: str | None, reason: str, detail: str
) -> KafkaRecord:
    """A bounded dead letter for a message that cannot be forwarded, keyed like the message."""
    DEAD_LETTERS.labels(source_topic, reason).inc()
    logger.warning("bridge: dead-lettered a message from %s (%d bytes): %s: %s",
                   source_topic, len(payload), reason, detail)
    key = dead_letter_key(pulsar_key)
    record = dead_letter_record(source_topic, payload, key, reason, detail, datetime.now(UTC))
    return KafkaRecord(dead_letter_topic, record.model_dump_json().encode(), key, None)


def kafka_record(dead_letter_topic: str, source_topic: str, payload: bytes, pulsar_key: str | None) -> KafkaRecord:
    """The Kafka record for one Pulsar message: the message itself keyed by tenant, or, when it is larger than
    any event the service accepts, a bounded dead letter on ``dead_letter_topic``. Never raises."""
    if len(payload) > bounded_json.MAX_DOCUMENT_BYTES:
        detail = f"{len(payload)} bytes, more than the {bounded_json.MAX_DOCUMENT_BYTES} accepted"
        return dead_letter_instead(dead_letter_topic, source_topic, payload, pulsar_key, "too-large", detail)
    key, timestamp = kafka_key_and_timestamp(payload, pulsar_key)
    return KafkaRecord(source_topic, payload, key, timestamp)


def new_topic(settings: Settings, name: str) -> NewTopic:
    """A topic the service creates: its partition count, replication factor and min in-sync replicas."""
    configs = ({"min.insync.replicas": str(settings.topic_min_insync_replicas)}
               if settings.topic_min_insync_replicas is not None else {})
    return NewTopic(name, num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor, topic_configs=configs)


class PartitionCountMismatch(RuntimeError):
    """Topics whose partition count differs from ``TOPIC_PARTITIONS`` and cannot be changed safely: they
    hold records, or have more partitions (Kafka cannot take partitions away).

    Kafka places a key by its hash modulo the partition count: more partitions would send a tenant's new
    events to another partition than its table state (the changelog partitions), so its worker would no
    longer see its tenant. Growing such topics is refused; docs/operations.md says how to migrate.
    """

    def __init__(self, wanted: int, found: Mapping[str, int], why: str) -> None:
        listed = ", ".join(f"{name} ({count})" for name, count in sorted(found.items()))
        super().__init__(
            f"TOPIC_PARTITIONS={wanted}, but these topics {why} with another partition count: {listed}. "
            "Changing the count would move tenants away from their state; keep TOPIC_PARTITIONS at the existing "
            "count, or migrate to a new APP_ID (docs/operations.md, 'Changing the partition count')."
        )
        self.wanted = wanted
        self.found = dict(found)


async def _holding_records(settings: Settings, partitions: Mapping[str, int]) -> set[str]:
    """Which of these topics ever held a record (an end offset above 0 on some partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, **aiokafka_security(settings))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            [TopicPartition(name, p) for name, count in partitions.items() for p in range(count)]
        )
    finally:
        await consumer.stop()
    return {tp.topic for tp, end in ends.items() if end > 0}


async def ensure_kafka_topics(settings: Settings, names: Sequence[str]) -> None:
    """Create ``names`` with the service's partition count; grow those with fewer partitions only while
    they never held a record.

    Every per-tenant table is co-partitioned with its source topics, so they must all have the same count
    (Faust refuses to write a table otherwise). Raises :class:`PartitionCountMismatch` for a topic with records
    and another count.
    """
    wanted = settings.topic_partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **aiokafka_security(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([new_topic(settings, n) for n in missing])
        present = [n for n in names if n in existing]
        other = {
            d["topic"]: len(d["partitions"])
            for d in (await admin.describe_topics(present) if present else [])
            if len(d["partitions"]) != wanted
        }
        used = await _holding_records(settings, other) if other else set()
        if used:
            raise PartitionCountMismatch(wanted, {name: other[name] for name in used}, "already hold records")
        short = {name: count for name, count in other.items() if count < wanted}
        if short:
            logger.warning("growing empty topics to %d partitions: %s", wanted, short)
            await admin.create_partitions({name: NewPartitions(wanted) for name in short})
        longer = {name: count for name, count in other.items() if count > wanted}
        if longer:
            raise PartitionCountMismatch(wanted, longer, "exist (Kafka cannot remove partitions)")
    finally:
        await admin.close()


class Bridge:
    def __init__(
        self,
        settings: Settings,
        inbound: Sequence[str] = INPUT_TOPICS,
        outbound: Sequence[str] = OUTPUT_TOPICS,
    ) -> None:
        self.settings = settings
        self.inbound = list(inbound)
        self.outbound = list(outbound)
        self._tasks: list[asyncio.Task[None]] = []
        self._pulsar: pulsar_asyncio.Client | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        dead_letters = [self.settings.dead_letter_topic] if self.inbound else []
        await ensure_kafka_topics(self.settings, [*self.inbound, *self.outbound, *dead_letters])
        self._pulsar = pulsar_asyncio.Client(
            self.settings.pulsar_url, operation_timeout_seconds=30, logger=logging.getLogger("pulsar.client"),
            **pulsar_client_options(self.settings),
        )
        if self.inbound:
            self._tasks.append(asyncio.create_task(self._supervise(self._run_inbound), name="bridge-inbound"))
        if self.outbound:
            self._tasks.append(asyncio.create_task(self._supervise(self._run_outbound), name="bridge-outbound"))

    async def _supervise(self, run: Callable[[], Awaitable[None]]) -> None:
        """Run one direction until stopped, restarting it after a failure (a broker restart, a rebalance
        that invalidated a commit...). Nothing is lost: unacknowledged input is delivered again."""
        delay = 1.0
        while not self._stopping.is_set():
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("bridge %s failed; restarting in %.0fs", run.__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            else:
                delay = 1.0

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._pulsar is not None:
            with contextlib.suppress(Exception):
                await self._pulsar.close()
            self._pulsar = None

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    # -- Pulsar -> Kafka ------------------------------------------------------------------------------

    async def _run_inbound(self) -> None:
        assert self._pulsar is not None
        consumer = await self._pulsar.subscribe(
            [pulsar_topic(self.settings, t) for t in self.inbound],
            subscription_name=self.settings.bridge_subscription,
            # Failover: one active bridge per topic (per-key order kept), the others take over when it dies
            # and receive everything it had not acknowledged. Key_Shared can leave redelivered messages of a
            # dead consumer blocked behind a "recently joined" consumer's read position.
            consumer_type=pulsar.ConsumerType.Failover,
            initial_position=pulsar.InitialPosition.Earliest,
            negative_ack_redelivery_delay_ms=1000,
            receiver_queue_size=MAX_IN_FLIGHT,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            **aiokafka_security(self.settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
        )
        await producer.start()
        in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        pending: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                message = await consumer.receive()
                await in_flight.acquire()
                delivery = await self._produce(producer, message)
                task = asyncio.create_task(self._ack_after(consumer, message, delivery, in_flight))
                pending.add(task)
                task.add_done_callback(pending.discard)
        finally:
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await producer.stop()
            with contextlib.suppress(Exception):
                await consumer.close()

    async def _produce(self, producer: AIOKafkaProducer, message: pulsar.Message) -> asyncio.Future[Any]:
        name = message.topic_name().rsplit("/", 1)[-1]
        payload = message.data()
        pulsar_key = message.partition_key() or None
        record = kafka_record(self.settings.dead_letter_topic, name, payload, pulsar_key)
        try:
            delivery: asyncio.Future[Any] = await producer.send(
                record.topic, record.value, key=record.key, timestamp_ms=record.timestamp_ms
            )
        except (MessageSizeTooLargeError, ValueError, TypeError) as exc:
            # Refused for what it is, not for the broker's state: it would be refused again on every
            # redelivery, so it is replaced by its (small) dead letter and the topic moves on.
            record = dead_letter_instead(self.settings.dead_letter_topic, name, payload, pulsar_key,
                                         "unforwardable", f"{type(exc).__name__}: {exc}")
            delivery = await producer.send(record.topic, record.value, key=record.key)
        return delivery

    async def _ack_after(
        self,
        consumer: pulsar_asyncio.Consumer,
        message: pulsar.Message,
        delivery: asyncio.Future[Any],
        in_flight: asyncio.Semaphore,
    ) -> None:
        name = message.topic_name().rsplit("/", 1)[-1]
        try:
            await delivery
        except Exception:
            logger.exception("Kafka refused a message from %s; Pulsar will redeliver it", name)
            consumer.negative_acknowledge(message)
        else:
            await consumer.acknowledge(message)
            BRIDGE_FORWARDED.labels("pulsar-to-kafka", name).inc()
            BRIDGE_LAG_SECONDS.labels("pulsar-to-kafka", name).set(
                max(0.0, time.time() - message.publish_timestamp() / 1000)
            )
        finally:
            in_flight.release()

    # -- Kafka -> Pulsar ------------------------------------------------------------------------------

    async def _run_outbound(self) -> None:
        assert self._pulsar is not None
        consumer = AIOKafkaConsumer(
            *self.outbound,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            **aiokafka_security(self.settings),
            group_id=f"{self.settings.app_id}-bridge-out",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producers: dict[str, pulsar_asyncio.Producer] = {}
        await consumer.start()
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                if not batches:
                    continue
                sends = []
                for tp, records in batches.items():
                    if tp.topic not in producers:
                        producers[tp.topic] = await self._pulsar.create_producer(
                            pulsar_topic(self.settings, tp.topic), batching_enabled=True
                        )
                    for record in records:
                        sends.append(
                            producers[tp.topic].send(
                                record.value or b"",
                                partition_key=record.key.decode("utf-8", "replace") if record.key else None,
                            )
                        )
                await asyncio.gather(*sends)
                await consumer.commit()
                for tp, records in batches.items():
                    BRIDGE_FORWARDED.labels("kafka-to-pulsar", tp.topic).inc(len(records))
                    BRIDGE_LAG_SECONDS.labels("kafka-to-pulsar", tp.topic).set(
                        max(0.0, time.time() - records[-1].timestamp / 1000)
                    )
        finally:
            await consumer.stop()
            for producer in producers.values():
                with contextlib.suppress(Exception):
                    await producer.close()
