"""The Kafka record the bridge writes for one Pulsar message: keyed by tenant, timestamped with the event time,
or a bounded dead letter instead."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import NamedTuple

from pipeline import bounded_json
from pipeline.events.dead_letters import dead_letter_record
from pipeline.events.dead_letters import kafka_key as dead_letter_key
from pipeline.events.models import TENANT_ID_PATTERN
from pipeline.metrics import DEAD_LETTERS

logger = logging.getLogger(__name__)


_TENANT_ID = re.compile(TENANT_ID_PATTERN)
#: Kafka record timestamps are non-negative milliseconds; later than year 9999 is no event time.
_MAX_TIMESTAMP_MS = 253_402_300_799_999


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
