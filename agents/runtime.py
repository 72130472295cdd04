"""What every agent does around its domain function: decode, dedupe, dead-letter, emit, count.

:class:`AgentRuntime` is built once per worker by the composition root (``pipeline/worker.py``) over the app and
its dedupe table, and handed to every agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import faust
from faust.types import EventT

from pipeline.app import ProvisioningApp
from pipeline.event_audit import audit_emit
from pipeline.events.dead_letters import MAX_REASON_CHARS, dead_letter_record
from pipeline.events.dead_letters import kafka_key as dead_letter_key
from pipeline.events.decode import Invalid, decode
from pipeline.events.models import Event
from pipeline.faust_adapter import check_sends_are_immediate, processing, send_record
from pipeline.faust_tuning import RawBytesSchema
from pipeline.isolation import isolated, record_failure
from pipeline.logs import log_context
from pipeline.metrics import DEAD_LETTERS, DEAD_LETTERS_LOST, EVENTS_DUPLICATE, EVENTS_FAILED, EVENTS_PROCESSED
from pipeline.outputs import Emit, Refused
from tables import processed_events
from tables.processed_events import DedupeMemory

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


def now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def writing_as(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the one being processed while the block runs: table writes go to its partition.

    Faust takes the changelog partition of a table write from the event in progress, and the body of a
    ``stream.take_events`` loop has none (faust-streaming/faust#497). A batch is written per source
    partition, with one of that partition's events made current.
    """
    with processing(event):
        yield


def events_acked_by_process(stream: Any) -> Any:
    """The stream's events for agents that hand each to :meth:`AgentRuntime.process`: it acknowledges them."""
    return stream.noack().events()


#: Events whose records may be on their way to Kafka at once, per source topic, before the agent waits for the
#: oldest. The producer sends one request at a time per broker, with at most one batch per partition: with
#: 500, the agent stopped every few hundred events for as many round trips as the backlog of small batches
#: needed, and one worker held about 240 tenant-created events a second whatever its CPU (with 5,000 and the
#: direct sends, about 430 a second, at a fifth less CPU per event than the direct sends alone:
#: docs/benchmarks.md section 8). The bound: some 15 records of under 1 kB per tenant-created event (at most
#: ~75 MB waiting), and as many unacknowledged events handled again after a crash (with the same record ids).
PENDING_EVENTS_LIMIT = 5_000


class PendingMarks:
    """Events handled whose records are on their way to Kafka. Once Kafka acknowledged all of an event's
    records, in arrival order, its id is marked processed and the event itself acknowledged (its offset may
    then be committed); until then the id counts as seen.

    The agent takes the next event without waiting, so a slow broker costs latency once, not once per
    event. A record Kafka refuses leaves its event unacknowledged: the offset is not committed past it and
    the event comes again after a restart. An id marked late (a crash in between) only lets a redelivery
    through to the domain function, which re-sends the same command ids.
    """

    def __init__(self, dedupe: DedupeMemory, limit: int = PENDING_EVENTS_LIMIT) -> None:
        self.dedupe = dedupe
        self.limit = limit
        self._queue: deque[tuple[EventT[Any], str, list[asyncio.Future[Any]]]] = deque()
        self._ids: set[str] = set()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    async def add(self, event: EventT[Any], event_id: str, sent: list[asyncio.Future[Any]]) -> None:
        self._queue.append((event, event_id, sent))
        self._ids.add(event_id)
        self.settle()
        while len(self._queue) > self.limit:
            for fut in self._queue[0][2]:
                await fut
            self.settle()

    def settle(self) -> None:
        """Mark and acknowledge the oldest events whose records were all acknowledged; a refused record
        raises (and its event stays where it is)."""
        while self._queue and all(fut.done() for fut in self._queue[0][2]):
            event, event_id, sent = self._queue[0]
            for fut in sent:
                fut.result()
            self._queue.popleft()
            with writing_as(event):
                self.dedupe.mark(event_id)
            event.ack()
            self._ids.discard(event_id)

    def forget(self) -> None:
        """Partitions were revoked: their events are not ours to mark or acknowledge any more."""
        self._queue.clear()
        self._ids.clear()


class AgentRuntime:
    """The worker's topics (raw bytes both ways), sending, dead-lettering and once-per-event processing."""

    def __init__(self, app: ProvisioningApp, dedupe: DedupeMemory) -> None:
        self.app = app
        self.settings = app.settings
        self.dedupe = dedupe
        self._topics: dict[str, faust.TopicT] = {}
        self._pending_marks: dict[str, PendingMarks] = {}
        check_sends_are_immediate(app)

    def register(self) -> None:
        """Forget pending marks when partitions are revoked, and settle them every second."""
        self.app.on_partitions_revoked.connect(self._forget_pending_marks)
        self.app.timer(interval=1.0)(self._settle_pending_marks)

    def topic(self, name: str, buffer: int | None = None) -> faust.TopicT:
        """The Faust topic ``name`` with raw bytes keys and values (we encode and decode ourselves).

        ``buffer``: how many of its records wait for the agent that consumes it (default: Faust's
        stream_buffer_maxsize, 4,096); set by that agent, on the first call.
        """
        if name not in self._topics:
            # Built like App.topic does, which drops its maxsize argument.
            self._topics[name] = faust.Topic(self.app, topics=[name], schema=RawBytesSchema(), maxsize=buffer)
        return self._topics[name]

    async def send(self, topic_name: str, key: str, value: Any) -> None:
        """Send one record (``value`` a pydantic model) and wait until Kafka acknowledged it."""
        await (await self.send_all([Emit(topic_name, key, value)]))[0]

    async def send_all(self, emits: Iterable[Emit]) -> list[asyncio.Future[Any]]:
        """Hand every record to the producer, in order; the futures resolve when Kafka acknowledged them.

        Straight to the producer (:func:`pipeline.faust_adapter.send_record`), not through Faust's
        ``Topic.send``: the same records on the same producer, without Faust's per-record promise, schema
        and sensor layers (half of the tenant-created agent's time, docs/benchmarks.md section 6).
        """
        producer = await self.app.maybe_start_producer()
        return [await send_record(producer, e.topic, e.key.encode(), e.value.model_dump_json().encode())
                for e in emits]

    async def emit_all(self, emits: Iterable[Emit]) -> None:
        """Send every record and wait until Kafka acknowledged each one."""
        for fut in await self.send_all(emits):
            await fut

    def pending_marks(self, source_topic: str) -> PendingMarks:
        if source_topic not in self._pending_marks:
            self._pending_marks[source_topic] = PendingMarks(self.dedupe)
        return self._pending_marks[source_topic]

    async def _forget_pending_marks(self, *_args: Any, **_kwargs: Any) -> None:
        for marks in self._pending_marks.values():
            marks.forget()

    async def _settle_pending_marks(self) -> None:
        """Also when no further event comes to settle them."""
        for source_topic, marks in self._pending_marks.items():
            with isolated("settle-pending-marks", source_topic):  # the refused record's event stays unacknowledged
                marks.settle()

    async def dead_letter(self, source_topic: str, raw: bytes | None, key: bytes | None, reason: str,
                          detail: str) -> None:
        """Send a bounded record of why ``raw`` was refused to the dead-letter topic.

        The record quotes at most the original's first bytes, so Kafka never refuses it for its size; if Kafka
        refuses it anyway, that is logged and counted, and the caller moves on: a dead letter that cannot be
        written must not stop the partition behind it.
        """
        DEAD_LETTERS.labels(source_topic, reason[:MAX_REASON_CHARS]).inc()
        EVENTS_FAILED.labels(source_topic).inc()
        record = dead_letter_record(source_topic, raw, key, reason, detail, datetime.now(UTC))
        logger.warning("dead-lettered a message from %s (%d bytes): %s: %s",
                       source_topic, record.original_length, record.reason, record.detail)
        try:
            producer = await self.app.maybe_start_producer()
            await (await send_record(producer, self.settings.dead_letter_topic, dead_letter_key(key),
                                     record.model_dump_json().encode()))
        except asyncio.CancelledError:
            raise
        except Exception:
            DEAD_LETTERS_LOST.labels(source_topic).inc()
            logger.exception("could not write the dead letter of a message from %s (sha256 %s); it is dropped",
                             source_topic, record.original_sha256)

    async def handler_failed(self, source_topic: str, message: EventT[Any], exc: Exception) -> None:
        """One record made its agent's handler raise: count it (``provisioning_failures_total{component=
        <topic>}``), log it and dead-letter it with the reason, so the agent goes on with the next record
        (an exception out of an agent would stop the worker). A dead letter that cannot be sent is logged."""
        record_failure(source_topic, exc, "a record")
        with isolated(f"{source_topic}-dead-letter"):
            await self.dead_letter(source_topic, message.value, message.key, "handler-error",
                                   f"{type(exc).__name__}: {exc}"[:1000])

    async def process(
        self,
        message: EventT[Any],
        source_topic: str,
        model: type[E],
        handle: Callable[[E], list[Emit]],
    ) -> None:
        """Run ``handle`` once per event id: invalid or refused input goes to the dead-letter topic. The event
        is acknowledged here (when its records are in Kafka): iterate with :func:`events_acked_by_process`."""
        raw: Any = message.value
        key: Any = message.key
        event = decode(raw, model)
        if isinstance(event, Invalid):
            await self.dead_letter(source_topic, raw, key, event.reason, event.detail)
            message.ack()
            return
        marks = self.pending_marks(source_topic)
        dedupe_key = processed_events.key(source_topic, event.tenant_id, event.event_id)
        if dedupe_key in marks or self.dedupe.seen(dedupe_key):
            EVENTS_DUPLICATE.labels(source_topic).inc()
            message.ack()
            return
        sent: list[asyncio.Future[Any]] = []
        with log_context(tenant_id=event.tenant_id, event_id=event.event_id):  # on every line the handler logs
            try:
                emits = handle(event)
            except Refused as refused:
                await self.dead_letter(source_topic, raw, key, refused.reason, refused.detail)
                audit = audit_emit(source_topic, event, "refused", now(), reason=refused.reason)
            except Exception as exc:  # a bug or bad data in one event: it is dead-lettered, the next one comes
                await self.handler_failed(source_topic, message, exc)
                audit = audit_emit(source_topic, event, "failed", now(), reason=type(exc).__name__)
            else:
                audit = audit_emit(source_topic, event, "succeeded", now(), records=len(emits))
                sent = await self.send_all(emits)
                EVENTS_PROCESSED.labels(source_topic).inc()
            if audit is not None:  # acknowledged like the event's own records before the event is marked
                sent += await self.send_all([audit])
        await marks.add(message, dedupe_key, sent)
