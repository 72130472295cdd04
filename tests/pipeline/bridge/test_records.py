"""The Kafka record built for one Pulsar message: key, timestamp, dead letter instead."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.bridge.records import kafka_key_and_timestamp, kafka_record
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

    record = kafka_record("dead-letter-events", "resource-metrics", payload, pulsar_key)
    assert record.topic == "resource-metrics" and record.value == payload
    assert record.key is None or len(record.key) <= 1024
