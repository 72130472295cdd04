from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import InvalidPartitionsError
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

import pipeline.bridge as bridge_module
from pipeline.bridge import (
    DESCRIBE_ATTEMPTS,
    InboundForwarder,
    KafkaDeliveryFailed,
    TopicAdministrationFailed,
    ensure_kafka_topics,
    forward_one,
    kafka_key_and_timestamp,
    kafka_record,
    outbound_offsets,
    refused_for_its_content,
)
from pipeline.config import Settings
from pipeline.events.models import DeadLetter


def test_key_is_the_tenant_and_timestamp_the_event_time() -> None:
    payload = b'{"tenant_id": "acme", "occurred_at": "2026-03-01T10:00:00+00:00"}'
    key, timestamp = kafka_key_and_timestamp(payload, None)
    assert key == b"acme"
    assert timestamp == int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)


def test_unreadable_payloads_are_still_forwarded_keyed_by_the_pulsar_key() -> None:
    assert kafka_key_and_timestamp(b"\xff not json", "k1") == (b"k1", None)
    assert kafka_key_and_timestamp(b"[1]", None) == (None, None)
    assert kafka_key_and_timestamp(b'{"tenant_id": "a", "occurred_at": "yesterday"}', None) == (b"a", None)
    naive = b'{"tenant_id": "a", "occurred_at": "2026-03-01T10:00:00"}'
    assert kafka_key_and_timestamp(naive, None) == (b"a", None)


# -- hostile messages ---------------------------------------------------------------------------------------


def test_deeply_nested_payloads_are_forwarded_keyed_by_the_pulsar_key_instead_of_raising() -> None:
    for payload in (b"[" * 5000, b'{"a":' * 5000, b'{"tenant_id": "acme", "x": ' + b"[" * 5000 + b"]}"):
        assert kafka_key_and_timestamp(payload, "k1") == (b"k1", None)


def test_hostile_keys_and_timestamps_are_not_used() -> None:
    bad_tenant = b'{"tenant_id": "' + b"x" * 100_000 + b'", "occurred_at": "0001-01-01T00:00:00+00:00"}'
    assert kafka_key_and_timestamp(bad_tenant, None) == (None, None)
    far = b'{"tenant_id": "acme", "occurred_at": "9999-12-31T23:59:59.999999-23:59"}'
    assert kafka_key_and_timestamp(far, None) == (b"acme", None)


def test_an_oversized_message_becomes_a_small_dead_letter_and_a_normal_one_is_forwarded() -> None:
    from pipeline.bridge import kafka_record
    from pipeline.events.models import DeadLetter

    big = b'{"tenant_id": "acme", "junk": "' + b"x" * 800_000 + b'"}'
    record = kafka_record("dead-letter-events", "tenant-created-events", big, "acme")
    assert record.topic == "dead-letter-events" and record.key == b"acme"
    assert len(record.value) < 16 * 1024
    letter = DeadLetter.model_validate_json(record.value)
    assert letter.reason == "too-large" and letter.source_topic == "tenant-created-events"
    assert letter.original_length == len(big) and letter.original_truncated

    small = b'{"tenant_id": "acme", "occurred_at": "2026-03-01T10:00:00+00:00"}'
    forwarded = kafka_record("dead-letter-events", "tenant-created-events", small, None)
    assert (forwarded.topic, forwarded.value, forwarded.key) == ("tenant-created-events", small, b"acme")


@settings(max_examples=200, deadline=None)
@given(payload=st.one_of(st.binary(max_size=3000), st.text(max_size=3000).map(lambda t: t.encode("utf-8", "replace"))),
       pulsar_key=st.one_of(st.none(), st.text(max_size=300)))
def test_the_bridge_never_raises_on_any_payload(payload: bytes, pulsar_key: str | None) -> None:
    from pipeline.bridge import kafka_record

    record = kafka_record("dead-letter-events", "resource-metrics", payload, pulsar_key)
    assert record.topic == "resource-metrics" and record.value == payload
    assert record.key is None or len(record.key) <= 1024


def test_topics_are_created_with_the_replication_settings() -> None:
    from pipeline.bridge import new_topic

    default = new_topic(Settings(), "tenant-created-events")
    assert (default.name, default.num_partitions, default.replication_factor, default.topic_configs) == (
        "tenant-created-events", 4, 1, {})  # as before the settings: one replica, the broker's min ISR
    ha = new_topic(Settings(topic_partitions=12, topic_replication_factor=3, topic_min_insync_replicas=2), "x")
    assert (ha.num_partitions, ha.replication_factor, ha.topic_configs) == (12, 3, {"min.insync.replicas": "2"})


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


def test_outbound_commits_the_offset_after_the_last_record_of_each_partition() -> None:
    class Record:
        def __init__(self, topic: str, partition: int, offset: int) -> None:
            self._t, self._p, self._o = topic, partition, offset

        def topic(self) -> str:
            return self._t

        def partition(self) -> int:
            return self._p

        def offset(self) -> int:
            return self._o

    offsets = outbound_offsets([Record("a", 0, 5), Record("a", 1, 9), Record("a", 0, 6), Record("b", 0, 0)])
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in offsets) == [("a", 0, 7), ("a", 1, 10), ("b", 0, 1)]


def test_a_failed_direction_is_restarted_until_the_bridge_stops() -> None:
    from pipeline.bridge import Bridge

    bridge = Bridge(Settings(), inbound=[], outbound=[])
    calls: list[int] = []

    def run() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("the broker went away")
        bridge._stopping.set()  # the second run ends as a stop would end it

    bridge._supervise(run)  # returns only once stopped; the failure did not end it
    assert calls == [0, 1]


# -- topic creation by several workers at once (fake admin client) ------------------------------------------


class _CreateResponse:
    def __init__(self, *topic_errors: tuple[Any, ...]) -> None:
        self.topic_errors = list(topic_errors)


class FakeAdmin:
    """An admin client over a scripted cluster: ``settling`` topics are described with an error code, then with
    no partitions, before their real entry, as Kafka does for a topic another worker has just created."""

    def __init__(self, partitions: dict[str, int], settling: set[str], create_errors: dict[str, int]) -> None:
        self.partitions = partitions
        self.settling = {name: [(5, 0), (0, 0)] for name in settling}  # (error code, partitions) before settling
        self.create_errors = create_errors
        self.grown: list[dict[str, int]] = []
        self.describes = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return list(self.partitions)

    async def create_topics(self, new_topics: list[Any]) -> _CreateResponse:
        for topic in new_topics:
            if not self.create_errors.get(topic.name):
                self.partitions.setdefault(topic.name, topic.num_partitions)
        return _CreateResponse(*((t.name, self.create_errors.get(t.name, 0), None) for t in new_topics))

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        self.describes += 1
        described = []
        for name in names:
            early = self.settling.get(name)
            code, count = early.pop(0) if early else (0, self.partitions[name])
            partitions = [{"partition": p} for p in range(count)]
            described.append({"topic": name, "error_code": code, "partitions": partitions})
        return described

    async def create_partitions(self, wanted: dict[str, Any]) -> None:
        for name, new in wanted.items():
            if self.partitions[name] == new.total_count:
                raise InvalidPartitionsError(f"Could not create partitions for {name}: Topic already has "
                                             f"{new.total_count} partitions.")
        self.grown.append({name: new.total_count for name, new in wanted.items()})
        self.partitions.update({name: new.total_count for name, new in wanted.items()})


async def _no_records(_settings: Any, _partitions: Any) -> set[str]:
    return set()


def _with_admin(monkeypatch: pytest.MonkeyPatch, admin: FakeAdmin) -> None:
    monkeypatch.setattr(bridge_module, "AIOKafkaAdminClient", lambda **_kwargs: admin)
    monkeypatch.setattr(bridge_module, "_holding_records", _no_records)
    monkeypatch.setattr(bridge_module, "DESCRIBE_PAUSE_S", 0.0)


async def test_a_topic_another_worker_is_creating_is_waited_for_not_grown(monkeypatch: pytest.MonkeyPatch) -> None:
    # Listed (the other worker created it), then described with an error code, then with no partitions.
    admin = FakeAdmin({"orders": 4}, settling={"orders"}, create_errors={})
    _with_admin(monkeypatch, admin)

    await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])

    assert admin.grown == [] and admin.describes == 3


async def test_an_existing_topic_at_creation_is_fine_and_other_refusals_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    # The other worker created "orders" between our listing and our creation: TOPIC_ALREADY_EXISTS (36).
    admin = FakeAdmin({}, settling=set(), create_errors={"orders": 36})
    admin.partitions["orders"] = 4
    admin.list_topics = _listing_nothing  # type: ignore[method-assign]
    _with_admin(monkeypatch, admin)
    await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])

    refusing = FakeAdmin({}, settling=set(), create_errors={"orders": 38})  # INVALID_REPLICATION_FACTOR
    _with_admin(monkeypatch, refusing)
    with pytest.raises(TopicAdministrationFailed, match="orders: INVALID_REPLICATION_FACTOR"):
        await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])


async def _listing_nothing() -> list[str]:
    return []


async def test_growing_a_topic_another_worker_just_grew_is_success(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin({"orders": 2}, settling=set(), create_errors={})
    real_create_partitions = admin.create_partitions

    async def grown_by_the_other_worker_first(wanted: dict[str, Any]) -> None:
        admin.partitions["orders"] = 4
        await real_create_partitions(wanted)

    admin.create_partitions = grown_by_the_other_worker_first  # type: ignore[method-assign]
    _with_admin(monkeypatch, admin)

    await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])

    assert admin.partitions == {"orders": 4} and admin.grown == []


async def test_a_topic_that_never_settles_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin({"orders": 4}, settling={"orders"}, create_errors={})
    admin.settling["orders"] = [(5, 0)] * (DESCRIBE_ATTEMPTS + 1)
    _with_admin(monkeypatch, admin)

    with pytest.raises(TopicAdministrationFailed, match="orders"):
        await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])
