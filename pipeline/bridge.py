"""The Pulsar <-> Kafka bridge.

Inbound: platform events on Pulsar topics are produced to Kafka topics of the same name, keyed by tenant
id, with the event's ``occurred_at`` as the record timestamp. A Pulsar message is acknowledged only after
Kafka acknowledged the write, so a bridge that dies in between loses nothing (Pulsar redelivers; the
agents deduplicate by event id).

A message that can never be written to Kafka (larger than the service accepts, or refused by Kafka for what it
is even when produced alone: its size, its timestamp, its content) is replaced by a bounded dead letter on the
dead-letter topic, and acknowledged once that is written: one message never blocks the ones behind it.
Unreadable messages of acceptable size are forwarded as they are and dead-lettered by the agents' decoder, with
the precise reason.

Outbound: the service's output topics are copied from Kafka to Pulsar; Kafka offsets are committed only
after Pulsar acknowledged every message up to them.

Each direction runs in a thread of its own, with the blocking Pulsar client and librdkafka (confluent-kafka):
the per-message work stays off the event loop of the worker it runs in (as a Faust service), or runs alone
with ``python -m pipeline bridge``. A failed direction restarts after a pause (1 s, doubling up to 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple, Protocol

import pulsar
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import InvalidPartitionsError, TopicAlreadyExistsError, for_code
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline import bounded_json
from pipeline.config import Settings
from pipeline.connections import aiokafka_security, librdkafka_security, pulsar_client_options
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
    # Called for every message the bridge forwards: plain try/except rather than contextlib.suppress, and the
    # fallback key only computed when it is used (same checks, a third of the cost).
    try:
        event = bounded_json.loads(payload)  # never raises anything else, whatever the payload
    except bounded_json.JsonRefused:
        return (dead_letter_key(pulsar_key) if pulsar_key else None), None
    if not isinstance(event, dict):
        return (dead_letter_key(pulsar_key) if pulsar_key else None), None
    tenant_id = event.get("tenant_id")
    if isinstance(tenant_id, str) and _TENANT_ID.fullmatch(tenant_id):
        key: bytes | None = tenant_id.encode()
    else:
        key = dead_letter_key(pulsar_key) if pulsar_key else None
    occurred_at = event.get("occurred_at")
    if not isinstance(occurred_at, str) or len(occurred_at) > 64:
        return key, None
    try:
        parsed = datetime.fromisoformat(occurred_at)
        if parsed.tzinfo is None:
            return key, None
        millis = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return key, None
    return key, (millis if 0 <= millis <= _MAX_TIMESTAMP_MS else None)


class KafkaRecord(NamedTuple):
    """What the bridge writes to Kafka for one Pulsar message (a named tuple: one is built per message)."""

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
            [AIOTopicPartition(name, p) for name, count in partitions.items() for p in range(count)]
        )
    finally:
        await consumer.stop()
    return {tp.topic for tp, end in ends.items() if end > 0}


#: How many times a topic is described before it counts as unsettled, and the pause between two attempts. A topic
#: just created (by this worker or by another one starting at the same moment) is listed before every broker
#: describes it: its entry has an error code (LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION) or no partitions.
DESCRIBE_ATTEMPTS = 40
DESCRIBE_PAUSE_S = 0.25


class TopicAdministrationFailed(RuntimeError):
    """Kafka refused to create a topic (other than because it exists), or never described it."""


def _creation_errors(response: Any) -> dict[str, str]:
    """The topics of a CreateTopics response that were refused for another reason than already existing.

    aiokafka returns the response as it is, without raising the per-topic errors it holds.
    """
    refused = {}
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else for_code(code).description
        refused[topic] = f"{for_code(code).message} ({code}): {message}"
    return refused


async def _partition_counts(admin: Any, names: Sequence[str]) -> dict[str, int]:
    """The partition count of each of ``names`` (all existing), describing again those not settled yet.

    Only entries without error and with partitions count: an entry still settling reads as 0 partitions, which
    would look like an empty topic to grow (and Kafka refuses to grow a topic to the count it already has).
    """
    counts: dict[str, int] = {}
    pending = list(names)
    for attempt in range(DESCRIBE_ATTEMPTS):
        if attempt:
            await asyncio.sleep(DESCRIBE_PAUSE_S)
        for entry in await admin.describe_topics(pending):
            if entry["error_code"] == 0 and entry["partitions"] and entry["topic"] in pending:
                counts[entry["topic"]] = len(entry["partitions"])
        pending = [name for name in pending if name not in counts]
        if not pending:
            return counts
    raise TopicAdministrationFailed(
        f"Kafka did not describe these topics after {DESCRIBE_ATTEMPTS} attempts: {', '.join(sorted(pending))}"
    )


async def _grow(admin: Any, wanted: int, short: Mapping[str, int]) -> None:
    """Grow ``short`` to ``wanted`` partitions. Another worker starting at the same moment may have grown them
    first: Kafka then refuses (INVALID_PARTITIONS, "already has N partitions"), which is success when a fresh
    describe shows the wanted count."""
    try:
        await admin.create_partitions({name: NewPartitions(wanted) for name in short})
    except InvalidPartitionsError:
        counts = await _partition_counts(admin, list(short))
        if any(count != wanted for count in counts.values()):
            raise
        logger.info("topics already grown to %d partitions by another worker: %s", wanted, sorted(short))


async def ensure_kafka_topics(settings: Settings, names: Sequence[str]) -> None:
    """Create ``names`` with the service's partition count; grow those with fewer partitions only while
    they never held a record.

    Every per-tenant table is co-partitioned with its source topics, so they must all have the same count
    (Faust refuses to write a table otherwise). Raises :class:`PartitionCountMismatch` for a topic with records
    and another count, :class:`TopicAdministrationFailed` when Kafka refuses to create a topic. Safe to run by
    several workers at once: a topic another one is creating or growing is waited for, not grown twice.
    """
    wanted = settings.topic_partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **aiokafka_security(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            refused = _creation_errors(await admin.create_topics([new_topic(settings, n) for n in missing]))
            if refused:
                listed = "; ".join(f"{name}: {why}" for name, why in sorted(refused.items()))
                raise TopicAdministrationFailed(f"Kafka refused to create these topics: {listed}")
        # Every name exists now (created here or by another worker): describing them cannot auto-create one.
        counts = await _partition_counts(admin, list(dict.fromkeys(names)))
        other = {name: count for name, count in counts.items() if count != wanted}
        used = await _holding_records(settings, other) if other else set()
        if used:
            raise PartitionCountMismatch(wanted, {name: other[name] for name in used}, "already hold records")
        short = {name: count for name, count in other.items() if count < wanted}
        if short:
            logger.warning("growing empty topics to %d partitions: %s", wanted, short)
            await _grow(admin, wanted, short)
        longer = {name: count for name, count in other.items() if count > wanted}
        if longer:
            raise PartitionCountMismatch(wanted, longer, "exist (Kafka cannot remove partitions)")
    finally:
        await admin.close()


# -- Pulsar -> Kafka ------------------------------------------------------------------------------------

#: Kafka error codes (librdkafka's, as delivery reports and ``produce`` give them) that refuse a record for what
#: it is, not for the broker's state: the record would be refused again on every redelivery and stall its topic,
#: so once refused alone too its dead letter replaces it, with the refusal as the reason. The broker refuses a
#: whole batch for one such record, so the first refusal only leads to producing the record again alone (which
#: also gives a batch garbled in transit, CORRUPT_MESSAGE, a second try).
CONTENT_REFUSALS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,  # larger than the topic's max.message.bytes (also raised by produce)
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,  # the batch holding the record larger than the broker accepts
    KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE: the record fails the broker's checks (CRC, ...)
    KafkaError.INVALID_RECORD,  # e.g. no key on a compacted topic, or a broker-side validation
    KafkaError.INVALID_TIMESTAMP,  # the event time outside the topic's message.timestamp.before/after.max.ms
    KafkaError.POLICY_VIOLATION,  # a broker policy refusing what the record holds
})
# Left out on purpose, as the broker's or the client's state (redelivered, the direction restarts): timeouts,
# unavailable leaders and replicas, authorization, UNSUPPORTED_FOR_MESSAGE_FORMAT and UNSUPPORTED_COMPRESSION_TYPE
# (the topic's configuration: every record would be refused), fatal producer errors.


def refused_for_its_content(error: KafkaError) -> bool:
    """Whether Kafka refused a record for what the record is (permanent for that record), not for its state."""
    return error.code() in CONTENT_REFUSALS and not error.fatal()
#: Messages produced to Kafka and not yet acknowledged by it, at most (then the thread waits for delivery
#: reports before receiving more).
MAX_UNDELIVERED = 20_000
#: How long a blocking receive waits before the thread checks whether it must stop (and serves reports).
RECEIVE_TIMEOUT_MS = 100
#: How many messages are produced between two servings of Kafka's delivery reports.
REPORTS_EVERY = 256
#: Kafka records the outbound direction reads at once, sends to Pulsar, and commits after Pulsar's acks.
OUTBOUND_BATCH = 1000
#: How long stopping waits for Kafka to acknowledge what was produced (unacknowledged messages are
#: redelivered by Pulsar to the next bridge, so this only limits duplicates).
FLUSH_TIMEOUT_S = 10.0


class _Route:
    """Per source topic: its short name and metric children, what happened since the last metrics update, and
    (inbound) the messages received and not yet acknowledged, in the order received."""

    __slots__ = ("count", "forwarded", "lag", "last_publish_ms", "name", "pending")

    def __init__(self, direction: str, name: str) -> None:
        self.name = name
        self.forwarded = BRIDGE_FORWARDED.labels(direction, name)
        self.lag = BRIDGE_LAG_SECONDS.labels(direction, name)
        self.count = 0
        self.last_publish_ms = 0
        #: [message, delivered] per message, oldest first.
        self.pending: deque[list[Any]] = deque()

    def delivered_prefix(self) -> Any:
        """The last message of the longest run of delivered messages at the head (taken off), or None."""
        pending = self.pending
        last = None
        while pending and pending[0][1]:
            last = pending.popleft()[0]
        return last

    def publish(self) -> None:
        """Move the counts to the metrics (once per serving, not per message: the labelled metric's lock and
        the clock are per-message costs otherwise)."""
        if self.count:
            self.forwarded.inc(self.count)
            self.lag.set(max(0.0, time.time() - self.last_publish_ms / 1000))
            self.count = 0


class PulsarAcks(Protocol):
    def acknowledge_cumulative(self, message: Any) -> None: ...
    def negative_acknowledge(self, message: Any) -> None: ...


class KafkaDeliveryFailed(RuntimeError):
    """Kafka did not take a message (not for its content): the direction restarts, and Pulsar redelivers the
    message and every later one not acknowledged."""


class KafkaProduce(Protocol):
    def produce(self, topic: str, value: bytes, key: bytes | None = None, *, on_delivery: Callable[..., None],
                timestamp: int = 0) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...


#: What a produced record is, for its delivery report: the message as received (possibly batched with others),
#: the message produced again alone after a refusal, or a dead letter.
BATCHED, ALONE, DEAD_LETTER = "batched", "alone", "dead-letter"


class InboundForwarder:
    """Pulsar -> Kafka in one thread: produces each received message, and acknowledges on Pulsar from Kafka's
    delivery reports (served by :meth:`serve`, in the same thread): per topic, cumulatively, up to the last
    message of the contiguous run of messages Kafka acknowledged (acks=all) from the oldest one not yet
    acknowledged. A message Kafka did not acknowledge is never covered: the run stops before it. (The Failover
    subscription allows cumulative acknowledgements; one per topic per serving instead of one per message is
    what the sync client's blocking ``acknowledge`` costs.)

    A record Kafka refuses for what it is (its size, its timestamp, its content: :data:`CONTENT_REFUSALS`) is
    replaced by its dead letter, and the message is acknowledged once the dead letter is written. The broker
    refuses a whole batch of records for one of them, so a refused record is first produced again alone, and
    dead-lettered only if refused again: a good message batched with a refused one is forwarded. Any other
    failure (the broker unavailable past the producer's delivery timeout...) negatively acknowledges the
    message and raises :class:`KafkaDeliveryFailed` from :meth:`serve`: the direction restarts, and Pulsar
    redelivers it and what follows it: nothing is lost (what Kafka did take after it is written again: a
    duplicate, which the agents drop by event id).
    """

    def __init__(self, consumer: PulsarAcks, producer: KafkaProduce, dead_letter_topic: str) -> None:
        self.consumer = consumer
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.undelivered = 0
        self.failed: KafkaError | None = None
        self._routes: dict[str, _Route] = {}
        self._refused: list[tuple[pulsar.Message, _Route]] = []

    def _route(self, topic: str) -> _Route:
        route = self._routes.get(topic)
        if route is None:
            route = self._routes[topic] = _Route("pulsar-to-kafka", topic.rsplit("/", 1)[-1])
        return route

    def forward(self, message: pulsar.Message) -> None:
        route = self._route(message.topic_name())
        record = kafka_record(self.dead_letter_topic, route.name, message.data(), message.partition_key() or None)
        kind = BATCHED if record.topic == route.name else DEAD_LETTER
        entry = [message, False]
        route.pending.append(entry)
        self._produce(record, partial(self._delivered, entry, route, kind))

    def _produce(self, record: KafkaRecord, on_delivery: Callable[[KafkaError | None, Any], None]) -> None:
        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key, on_delivery=on_delivery,
                                      timestamp=record.timestamp_ms or 0)  # 0: the producer's clock
            except BufferError:  # librdkafka's queue is full: wait for deliveries, then again
                self.producer.poll(0.1)
                continue
            self.undelivered += 1
            return

    def _delivered(self, entry: list[Any], route: _Route, kind: str, error: KafkaError | None, _record: Any) -> None:
        self.undelivered -= 1
        if error is None:
            entry[1] = True  # acknowledged on Pulsar by serve, with the run it ends or belongs to
            route.count += 1
        elif kind == BATCHED and refused_for_its_content(error):
            self._refused.append((entry, route))  # produced again alone by serve (not from a callback)
        elif kind == ALONE and refused_for_its_content(error):
            # Refused for what it is: it would be refused again on every redelivery, so its (small) dead letter
            # replaces it, and the message is acknowledged once that is written.
            self._dead_letter(entry, route, f"Kafka: {error.str()}")
        else:
            logger.warning("bridge: Kafka refused a message from %s (%s); Pulsar will redeliver it",
                           route.name, error.str())
            self.consumer.negative_acknowledge(entry[0])
            self.failed = self.failed or error

    def _dead_letter(self, entry: list[Any], route: _Route, detail: str) -> None:
        message = entry[0]
        record = dead_letter_instead(self.dead_letter_topic, route.name, message.data(),
                                     message.partition_key() or None, "unforwardable", detail)
        self._produce(record, partial(self._delivered, entry, route, DEAD_LETTER))

    def refused_at_once(self, message: pulsar.Message, exc: Exception) -> None:
        """A record the producer refused before sending it (larger than it accepts, ...): its dead letter."""
        route = self._route(message.topic_name())
        if not route.pending or route.pending[-1][0] is not message:  # refused before forward added it
            route.pending.append([message, False])
        self._dead_letter(route.pending[-1], route, f"{type(exc).__name__}: {exc}")

    def _produce_refused_alone(self) -> None:
        """Produce each record refused in a batch again, alone: everything else delivered first, and its own
        delivery waited for before anything else is produced (rare: a record too large for the topic)."""
        while self._refused:
            if self.producer.flush(FLUSH_TIMEOUT_S) > 0:
                return  # Kafka slow or away: try again at the next serving
            entry, route = self._refused.pop(0)
            message = entry[0]
            record = kafka_record(self.dead_letter_topic, route.name, message.data(), message.partition_key() or None)
            self._produce(record, partial(self._delivered, entry, route, ALONE))
            self.producer.flush(FLUSH_TIMEOUT_S)

    def _acknowledge(self) -> None:
        for route in self._routes.values():
            last = route.delivered_prefix()
            if last is not None:
                self.consumer.acknowledge_cumulative(last)
                route.last_publish_ms = last.publish_timestamp()
            route.publish()

    def serve(self, timeout: float = 0.0) -> None:
        """Deliver Kafka's reports, acknowledge on Pulsar what they allow and update the metrics; raise
        :class:`KafkaDeliveryFailed` after a failed delivery (the direction restarts with a new producer and
        consumer; what was not acknowledged is redelivered)."""
        self.producer.poll(timeout)
        if self._refused:
            self._produce_refused_alone()
        self._acknowledge()
        if self.failed is not None:
            raise KafkaDeliveryFailed(f"Kafka did not take a message: {self.failed.str()}")

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait (bounded) for Kafka to acknowledge what was produced, acknowledging it on Pulsar; a message
        left unacknowledged (Kafka away, or refused and not yet produced alone) is redelivered by Pulsar."""
        self.producer.flush(timeout)
        if self._refused:
            self._produce_refused_alone()
        self._acknowledge()


def forward_one(forwarder: InboundForwarder, message: pulsar.Message) -> None:
    """Produce ``message`` (or its dead letter when the producer refuses it at once for its content)."""
    try:
        forwarder.forward(message)
    except KafkaException as exc:
        if not refused_for_its_content(exc.args[0]):
            raise
        forwarder.refused_at_once(message, exc)
    except (ValueError, TypeError) as exc:
        forwarder.refused_at_once(message, exc)


def kafka_client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A librdkafka configuration: the brokers, the security settings, and logs and errors through logging
    (librdkafka writes them to stderr otherwise, which would break LOG_FORMAT=json)."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        **librdkafka_security(settings),
        "logger": logging.getLogger("pipeline.bridge.kafka"),
        "error_cb": _log_kafka_error,
        **extra,
    }


def inbound_producer_config(settings: Settings) -> dict[str, Any]:
    """The inbound producer: acks=all and idempotent (no loss, no duplicate from its retries), and murmur2 for
    keyed records, the partitioner of aiokafka (the worker's producer, Faust's tables) and of the Java client:
    librdkafka's default (CRC32) would put a tenant's events on another partition than its table state."""
    return kafka_client_config(settings, **{
        "acks": "all", "enable.idempotence": True, "linger.ms": 2, "partitioner": "murmur2_random",
    })


def _log_kafka_error(error: KafkaError) -> None:
    # Connection errors are retried by librdkafka; a fatal one fails the deliveries, which restarts the direction.
    logger.warning("bridge: Kafka client error: %s", error.str())


# -- Kafka -> Pulsar ------------------------------------------------------------------------------------


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


class Bridge:
    """Both directions, each in a thread of its own off the event loop (the sync Pulsar client and librdkafka
    do their per-message work without the loop); ``start``/``stop``/``run_forever`` are coroutines for the
    worker's Faust service and ``python -m pipeline bridge``."""

    def __init__(
        self,
        settings: Settings,
        inbound: Sequence[str] = INPUT_TOPICS,
        outbound: Sequence[str] = OUTPUT_TOPICS,
    ) -> None:
        self.settings = settings
        self.inbound = list(inbound)
        self.outbound = list(outbound)
        self._threads: list[threading.Thread] = []
        self._pulsar: pulsar.Client | None = None
        self._stopping = threading.Event()
        self._stopped: asyncio.Event | None = None

    async def start(self) -> None:
        dead_letters = [self.settings.dead_letter_topic] if self.inbound else []
        await ensure_kafka_topics(self.settings, [*self.inbound, *self.outbound, *dead_letters])
        self._stopping.clear()
        self._stopped = asyncio.Event()
        self._pulsar = pulsar.Client(
            self.settings.pulsar_url, operation_timeout_seconds=30, logger=logging.getLogger("pulsar.client"),
            **pulsar_client_options(self.settings),
        )
        runs = [(self._run_inbound, "bridge-inbound")] if self.inbound else []
        runs += [(self._run_outbound, "bridge-outbound")] if self.outbound else []
        for run, name in runs:
            thread = threading.Thread(target=self._supervise, args=(run,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _supervise(self, run: Callable[[], None]) -> None:
        """Run one direction until stopped, restarting it after a failure (a broker restart, a rebalance
        that invalidated a commit...). Nothing is lost: unacknowledged input is delivered again."""
        delay = 1.0
        while not self._stopping.is_set():
            try:
                run()
            except Exception:
                logger.exception("bridge %s failed; restarting in %.0fs", run.__name__, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
            else:
                delay = 1.0

    async def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            # Bounded: a receive or consume wakes up within a second, a flush waits FLUSH_TIMEOUT_S at most.
            await asyncio.to_thread(thread.join, FLUSH_TIMEOUT_S + 30)
            if thread.is_alive():
                logger.warning("bridge: %s did not stop in time", thread.name)
        self._threads.clear()
        if self._pulsar is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._pulsar.close)
            self._pulsar = None
        if self._stopped is not None:
            self._stopped.set()

    async def run_forever(self) -> None:
        await self.start()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    # -- Pulsar -> Kafka ------------------------------------------------------------------------------

    def _run_inbound(self) -> None:
        assert self._pulsar is not None
        consumer = self._pulsar.subscribe(
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
        try:
            producer = Producer(inbound_producer_config(self.settings))
            forwarder = InboundForwarder(consumer, producer, self.settings.dead_letter_topic)
            try:
                self._forward_until_stopped(consumer, forwarder)
            finally:
                forwarder.close()
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def _forward_until_stopped(self, consumer: pulsar.Consumer, forwarder: InboundForwarder) -> None:
        produced = 0
        while not self._stopping.is_set():
            try:
                message = consumer.receive(RECEIVE_TIMEOUT_MS)
            except pulsar.Timeout:
                forwarder.serve()
                continue
            forward_one(forwarder, message)
            produced += 1
            if produced % REPORTS_EVERY == 0:
                forwarder.serve()
            while forwarder.undelivered >= MAX_UNDELIVERED and not self._stopping.is_set():
                forwarder.serve(0.05)

    # -- Kafka -> Pulsar ------------------------------------------------------------------------------

    def _run_outbound(self) -> None:
        assert self._pulsar is not None
        consumer = Consumer(kafka_client_config(
            self.settings, **{
                "group.id": f"{self.settings.app_id}-bridge-out",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        ))
        producers: dict[str, pulsar.Producer] = {}
        routes: dict[str, _Route] = {}
        consumer.subscribe(self.outbound)
        try:
            while not self._stopping.is_set():
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
                        producer = producers[topic] = self._pulsar.create_producer(
                            pulsar_topic(self.settings, topic), batching_enabled=True, block_if_queue_full=True,
                            max_pending_messages=2 * OUTBOUND_BATCH,
                        )
                        routes[topic] = _Route("kafka-to-pulsar", topic)
                    key = record.key()
                    sent.add()
                    producer.send_async(record.value() or b"", sent.callback,
                                        partition_key=key.decode("utf-8", "replace") if key else None)
                    route = routes[topic]
                    route.count += 1
                    route.last_publish_ms = record.timestamp()[1]
                for producer in producers.values():
                    producer.flush()
                if not sent.wait(self._stopping):
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
