from __future__ import annotations

from datetime import UTC, datetime

from pipeline.bridge import kafka_key_and_timestamp


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
