"""What every agent does around its domain function: decode, dedupe, dead-letter, emit, count."""

from __future__ import annotations

import base64
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import faust
from faust.streams import _current_event
from faust.types import EventT

from pipeline.app import app
from pipeline.events.decode import Invalid, decode
from pipeline.events.models import DeadLetter, Event
from pipeline.metrics import DEAD_LETTERS, EVENTS_DUPLICATE, EVENTS_FAILED, EVENTS_PROCESSED
from pipeline.outputs import Emit, Refused
from tables import processed_events

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

_topics: dict[str, faust.TopicT] = {}


def topic(name: str) -> faust.TopicT:
    """The Faust topic ``name`` with raw bytes keys and values (we encode and decode ourselves)."""
    if name not in _topics:
        _topics[name] = app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                                  value_serializer="raw")
    return _topics[name]


@contextmanager
def writing_as(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the one being processed while the block runs: table writes go to its partition.

    Faust takes the changelog partition of a table write from the event in progress, and the body of a
    ``stream.take_events`` loop has none (faust-streaming/faust#497). A batch is written per source
    partition, with one of that partition's events made current.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def emit_all(emits: Iterable[Emit]) -> None:
    """Send every record and wait until Kafka acknowledged each one."""
    pending = [
        await topic(e.topic).send(key=e.key.encode(), value=e.value.model_dump_json().encode())
        for e in emits
    ]
    for fut in pending:
        await fut


async def dead_letter(source_topic: str, raw: bytes | None, key: bytes | None, reason: str, detail: str) -> None:
    DEAD_LETTERS.labels(source_topic, reason).inc()
    EVENTS_FAILED.labels(source_topic).inc()
    logger.warning("dead-lettered a message from %s: %s: %s", source_topic, reason, detail)
    record = DeadLetter(
        source_topic=source_topic,
        reason=reason,
        detail=detail,
        original_base64=base64.b64encode(raw or b"").decode(),
        key=key.decode("utf-8", "replace") if key else None,
        occurred_at=datetime.now(UTC),
    )
    fut = await topic(app.settings.dead_letter_topic).send(key=key, value=record.model_dump_json().encode())
    await fut


async def process(
    message: EventT[Any],
    source_topic: str,
    model: type[E],
    handle: Callable[[E], list[Emit]],
    dedupe: bool = True,
) -> None:
    """Run ``handle`` once per event id: invalid or refused input goes to the dead-letter topic."""
    raw: Any = message.value
    key: Any = message.key
    decoded = decode(raw, model)
    if isinstance(decoded, Invalid):
        await dead_letter(source_topic, raw, key, decoded.reason, decoded.detail)
        return
    event = decoded.event
    if dedupe and processed_events.seen(event.event_id):
        EVENTS_DUPLICATE.labels(source_topic).inc()
        return
    try:
        emits = handle(event)
    except Refused as refused:
        await dead_letter(source_topic, raw, key, refused.reason, refused.detail)
    else:
        await emit_all(emits)
        EVENTS_PROCESSED.labels(source_topic).inc()
    if dedupe:
        processed_events.mark(event.event_id)
