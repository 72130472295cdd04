"""Dead-letter records of bounded size, whatever the input that caused them.

A dead letter quotes the first :data:`EXCERPT_BYTES` of the original (base64) with its full length and
SHA-256, and bounded reason, detail and key, so it always fits in a Kafka message (1 MB by default): an
oversized input can never produce a dead letter that Kafka refuses, which would stall the partition.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from pipeline.events.models import DeadLetter

#: Bytes of the original quoted in a dead letter.
EXCERPT_BYTES = 4096
MAX_REASON_CHARS = 64
MAX_DETAIL_CHARS = 2000
MAX_KEY_CHARS = 256
MAX_TOPIC_CHARS = 256


def as_bytes(value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return bytes(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letter_record(
    source_topic: str,
    raw: bytes | str | None,
    key: bytes | str | None,
    reason: str,
    detail: str,
    occurred_at: datetime,
) -> DeadLetter:
    original = as_bytes(raw)
    key_bytes = as_bytes(key) if key is not None else None
    return DeadLetter(
        source_topic=_clip(source_topic, MAX_TOPIC_CHARS),
        reason=_clip(reason, MAX_REASON_CHARS),
        detail=_clip(detail, MAX_DETAIL_CHARS),
        original_base64=base64.b64encode(original[:EXCERPT_BYTES]).decode(),
        original_length=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        original_truncated=len(original) > EXCERPT_BYTES,
        key=_clip(key_bytes.decode("utf-8", "replace"), MAX_KEY_CHARS) if key_bytes is not None else None,
        occurred_at=occurred_at,
    )


def kafka_key(key: bytes | str | None) -> bytes | None:
    """The Kafka key a dead letter is sent with: the original's, bounded (None stays None)."""
    if key is None:
        return None
    return as_bytes(key)[: MAX_KEY_CHARS * 4]
