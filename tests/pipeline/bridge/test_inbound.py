"""The inbound forwarder: acknowledgements follow Kafka's delivery reports, refusals and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import REGISTRY

from pipeline.bridge.inbound import (
    InboundForwarder,
    KafkaDeliveryFailed,
    forward_one,
    refused_for_its_content,
)
from pipeline.bridge.records import kafka_record
from pipeline.events.models import DeadLetter

# -- the inbound forwarder: acknowledgements follow Kafka's delivery reports ---------------------------------


class FakeMessage:
    """What the forwarder reads of a Pulsar message."""

    def __init__(self, payload: bytes, key: str = "", topic: str = "persistent://public/default/resource-metrics"):
        self.payload, self.key, self.topic = payload, key, topic

    def topic_name(self) -> str:
        return self.topic

    def data(self) -> bytes:
        return self.payload

    def partition_key(self) -> str:
        return self.key

    def publish_timestamp(self) -> int:
        return 1_700_000_000_000


class FakeConsumer:
    """Records the cumulative acknowledgements (each covers its message and every earlier one of its topic)."""

    def __init__(self) -> None:
        self.acked: list[object] = []
        self.nacked: list[object] = []

    def acknowledge_cumulative(self, message: object) -> None:
        self.acked.append(message)

    def negative_acknowledge(self, message: object) -> None:
        self.nacked.append(message)


class FakeProducer:
    """Holds what was produced until the test answers it with ``report``; ``poll`` serves the answers, as
    librdkafka does."""

    def __init__(self, refuse_at_once: Exception | None = None) -> None:
        self.produced: list[tuple[str, bytes, bytes | None, int, Any]] = []
        self.reports: list[tuple[Any, Any]] = []
        self.refuse_at_once = refuse_at_once

    def produce(self, topic: str, value: bytes, key: bytes | None = None, *, on_delivery: Any,
                timestamp: int = 0) -> None:
        if self.refuse_at_once is not None and topic != "dead-letter-events":
            raise self.refuse_at_once
        self.produced.append((topic, value, key, timestamp, on_delivery))

    def report(self, index: int, error: Any) -> None:
        self.reports.append((self.produced[index][4], error))

    def poll(self, timeout: float) -> int:
        reports, self.reports = self.reports, []
        for on_delivery, error in reports:
            on_delivery(error, None)
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0


EVENT = b'{"tenant_id": "acme", "occurred_at": "2026-03-01T10:00:00+00:00"}'


def forwarder_with(producer: FakeProducer) -> tuple[Any, FakeConsumer]:
    consumer = FakeConsumer()
    return InboundForwarder(consumer, producer, "dead-letter-events"), consumer


def test_a_message_is_acknowledged_only_after_kafka_acknowledged_it() -> None:

    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    first, second = FakeMessage(EVENT), FakeMessage(EVENT)
    forward_one(forwarder, first)
    forward_one(forwarder, second)
    forwarder.serve()
    assert consumer.acked == [] and forwarder.undelivered == 2  # produced, not yet acknowledged by Kafka
    topic, value, key, timestamp, _ = producer.produced[0]
    assert (topic, value, key, timestamp) == (
        "resource-metrics", EVENT, b"acme", int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp() * 1000))
    producer.report(1, None)
    forwarder.serve()
    # The second is in Kafka, but acknowledging it would cover the first, which is not: nothing yet.
    assert consumer.acked == [] and forwarder.undelivered == 1
    producer.report(0, None)
    forwarder.serve()
    assert consumer.acked == [second] and consumer.nacked == []  # both, cumulatively


def test_the_forwarder_keys_like_kafka_record() -> None:
    producer = FakeProducer()
    forwarder, _ = forwarder_with(producer)
    payloads = [(EVENT, "other"), (b"\xff not json", "k1"), (b"[1]", ""), (b'{"tenant_id": "a b"}', "k2")]
    for payload, key in payloads:
        forward_one(forwarder, FakeMessage(payload, key=key))
    for (payload, key), (topic, value, produced_key, timestamp, _) in zip(payloads, producer.produced, strict=True):
        expected = kafka_record("dead-letter-events", "resource-metrics", payload, key or None)
        assert (topic, value, produced_key, timestamp or None) == tuple(expected)


def test_acknowledgements_are_per_topic() -> None:
    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    metrics = FakeMessage(EVENT)
    created = FakeMessage(EVENT, topic="persistent://public/default/tenant-created-events")
    forward_one(forwarder, metrics)
    forward_one(forwarder, created)
    producer.report(1, None)
    forwarder.serve()
    assert consumer.acked == [created]  # its topic's oldest; the other topic's message is not covered


class FakeKafkaError:
    def __init__(self, code: int, fatal: bool = False) -> None:
        self._code, self._fatal = code, fatal

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal

    def str(self) -> str:
        return f"error {self._code}"


def test_a_transient_failure_is_redelivered_never_acknowledged() -> None:

    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    message = FakeMessage(EVENT)
    forward_one(forwarder, message)
    producer.report(0, FakeKafkaError(KafkaError._MSG_TIMED_OUT))
    with pytest.raises(KafkaDeliveryFailed):  # the direction restarts
        forwarder.serve()
    assert consumer.nacked == [message] and consumer.acked == []
    assert len(producer.produced) == 1  # no dead letter: the broker's state, not the message


def test_acknowledgements_never_pass_a_message_kafka_did_not_take() -> None:
    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    messages = [FakeMessage(EVENT) for _ in range(4)]
    for message in messages:
        forward_one(forwarder, message)
    producer.report(0, None)
    producer.report(1, FakeKafkaError(KafkaError._MSG_TIMED_OUT))
    producer.report(2, None)
    producer.report(3, None)
    with pytest.raises(KafkaDeliveryFailed):
        forwarder.serve()
    forwarder.close(0)  # as the restart does: what can be acknowledged is, still never past the failed one
    assert consumer.acked == [messages[0]] and consumer.nacked == [messages[1]]


def test_a_record_kafka_refuses_for_its_size_is_produced_alone_then_replaced_by_its_dead_letter() -> None:
    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    message = FakeMessage(EVENT, key="acme")
    forward_one(forwarder, message)
    producer.report(0, FakeKafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    forwarder.serve()
    # The broker refuses a whole batch: first the record again, alone.
    assert [p[:3] for p in producer.produced] == [("resource-metrics", EVENT, b"acme")] * 2
    assert consumer.acked == [] and consumer.nacked == []
    producer.report(1, FakeKafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    forwarder.serve()
    assert consumer.acked == [] and consumer.nacked == []  # not yet: its dead letter is not written
    topic, value, key, _, _ = producer.produced[2]
    letter = DeadLetter.model_validate_json(value)
    assert (topic, key, letter.reason, letter.source_topic) == (
        "dead-letter-events", b"acme", "unforwardable", "resource-metrics")
    producer.report(2, None)
    forwarder.serve()
    assert consumer.acked == [message]


@pytest.mark.parametrize("code", [
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD, KafkaError.INVALID_TIMESTAMP, KafkaError.POLICY_VIOLATION,
])
def test_refusals_of_the_record_itself_are_permanent_for_it(code: int) -> None:
    assert refused_for_its_content(KafkaError(code))
    assert not refused_for_its_content(FakeKafkaError(code, fatal=True))  # a fatal producer restarts instead


@pytest.mark.parametrize("code", [
    KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.INVALID_REQUIRED_ACKS, KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    KafkaError.UNSUPPORTED_COMPRESSION_TYPE, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError._FATAL,
    KafkaError._QUEUE_FULL,
])
def test_refusals_for_the_brokers_or_the_clients_state_are_redelivered(code: int) -> None:
    assert not refused_for_its_content(KafkaError(code))


@pytest.mark.parametrize("code", [KafkaError.INVALID_TIMESTAMP, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
                                  KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.POLICY_VIOLATION])
def test_a_record_refused_for_its_content_is_produced_alone_then_dead_lettered_with_the_reason(code: int) -> None:
    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    refused, behind = FakeMessage(EVENT, key="acme"), FakeMessage(EVENT, key="acme")
    forward_one(forwarder, refused)
    forward_one(forwarder, behind)
    producer.report(0, KafkaError(code))
    producer.report(1, None)
    forwarder.serve()
    assert [p[:3] for p in producer.produced] == [("resource-metrics", EVENT, b"acme")] * 3  # again, alone
    assert consumer.acked == [] and consumer.nacked == []  # the one behind waits for the refused one
    producer.report(2, KafkaError(code))
    forwarder.serve()
    topic, value, key, _, _ = producer.produced[3]
    letter = DeadLetter.model_validate_json(value)
    assert (topic, key, letter.reason) == ("dead-letter-events", b"acme", "unforwardable")
    assert KafkaError(code).str() in letter.detail
    producer.report(3, None)
    forwarder.serve()  # no KafkaDeliveryFailed: the topic moves on
    assert consumer.acked == [behind] and consumer.nacked == []  # cumulative: covers the dead-lettered one


def test_a_record_refused_with_its_batch_but_accepted_alone_is_forwarded() -> None:
    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    message = FakeMessage(EVENT, key="acme")
    forward_one(forwarder, message)
    producer.report(0, FakeKafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    forwarder.serve()
    producer.report(1, None)
    forwarder.serve()
    assert consumer.acked == [message] and len(producer.produced) == 2  # no dead letter


def test_a_dead_letter_that_fails_is_redelivered_not_dead_lettered_again() -> None:

    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    message = FakeMessage(b'{"tenant_id": "acme", "junk": "' + b"x" * 300_000 + b'"}')
    forward_one(forwarder, message)
    assert producer.produced[0][0] == "dead-letter-events"  # too large for the service: its dead letter at once
    producer.report(0, FakeKafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    with pytest.raises(KafkaDeliveryFailed):
        forwarder.serve()
    assert consumer.nacked == [message] and consumer.acked == [] and len(producer.produced) == 1


def test_a_record_the_producer_refuses_at_once_is_dead_lettered() -> None:

    producer = FakeProducer(refuse_at_once=KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)))
    forwarder, consumer = forwarder_with(producer)
    message = FakeMessage(EVENT)
    forward_one(forwarder, message)
    assert [p[0] for p in producer.produced] == ["dead-letter-events"]
    producer.report(0, None)
    forwarder.serve()
    assert consumer.acked == [message]


def test_another_error_at_once_stops_the_direction_without_acknowledging() -> None:

    producer = FakeProducer(refuse_at_once=KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC)))
    forwarder, consumer = forwarder_with(producer)
    with pytest.raises(KafkaException):
        forward_one(forwarder, FakeMessage(EVENT))
    assert producer.produced == [] and consumer.acked == []


def test_a_fatal_producer_error_restarts_the_direction() -> None:

    producer = FakeProducer()
    forwarder, consumer = forwarder_with(producer)
    message = FakeMessage(EVENT)
    forward_one(forwarder, message)
    producer.report(0, FakeKafkaError(KafkaError._FATAL, fatal=True))
    with pytest.raises(KafkaDeliveryFailed):
        forwarder.serve()
    assert consumer.nacked == [message] and consumer.acked == []


def test_the_forwarded_counter_and_lag_are_updated_per_serving() -> None:

    labels = {"direction": "pulsar-to-kafka", "topic": "tenant-created-events"}
    before = REGISTRY.get_sample_value("provisioning_bridge_forwarded_total", labels) or 0.0
    producer = FakeProducer()
    forwarder, _ = forwarder_with(producer)
    for _ in range(3):
        forward_one(forwarder, FakeMessage(EVENT, topic="persistent://public/default/tenant-created-events"))
    for index in range(3):
        producer.report(index, None)
    forwarder.serve()
    assert REGISTRY.get_sample_value("provisioning_bridge_forwarded_total", labels) == before + 3
    assert (REGISTRY.get_sample_value("provisioning_bridge_lag_seconds", labels) or 0.0) > 0
