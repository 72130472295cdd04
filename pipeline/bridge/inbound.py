"""Pulsar -> Kafka: each message produced to Kafka (or its dead letter), acknowledged on Pulsar once Kafka has it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import pulsar
from confluent_kafka import KafkaError, KafkaException

from pipeline.bridge.records import KafkaRecord, dead_letter_instead, kafka_record
from pipeline.bridge.routes import Route

logger = logging.getLogger(__name__)


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
#: How long stopping waits for Kafka to acknowledge what was produced (unacknowledged messages are
#: redelivered by Pulsar to the next bridge, so this only limits duplicates).
FLUSH_TIMEOUT_S = 10.0


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
        self._routes: dict[str, Route] = {}
        self._refused: list[tuple[pulsar.Message, Route]] = []

    def _route(self, topic: str) -> Route:
        route = self._routes.get(topic)
        if route is None:
            route = self._routes[topic] = Route("pulsar-to-kafka", topic.rsplit("/", 1)[-1])
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

    def _delivered(self, entry: list[Any], route: Route, kind: str, error: KafkaError | None, _record: Any) -> None:
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

    def _dead_letter(self, entry: list[Any], route: Route, detail: str) -> None:
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


def forward_until_stopped(consumer: pulsar.Consumer, forwarder: InboundForwarder, stopping: threading.Event) -> None:
    """Receive from Pulsar and forward to Kafka until ``stopping`` is set, serving Kafka's reports every
    REPORTS_EVERY messages (and while idle), and waiting while MAX_UNDELIVERED messages are unacknowledged."""
    produced = 0
    while not stopping.is_set():
        try:
            message = consumer.receive(RECEIVE_TIMEOUT_MS)
        except pulsar.Timeout:
            forwarder.serve()
            continue
        forward_one(forwarder, message)
        produced += 1
        if produced % REPORTS_EVERY == 0:
            forwarder.serve()
        while forwarder.undelivered >= MAX_UNDELIVERED and not stopping.is_set():
            forwarder.serve(0.05)
