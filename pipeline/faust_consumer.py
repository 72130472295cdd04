"""A Faust consumer that hands each message to the conductor without creating tasks when it can.

Faust's ``Consumer._drain_messages`` delivers every message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: four tasks and an ``asyncio.wait``
per message, a large part of Faust's own CPU cost per event in the worker (docs/benchmarks.md, section 1).
The callback (the conductor's ``on_message``) almost never suspends: only while flow control is stopped
(rebalances), while the producer buffer is full, or when a stream's queue is full.

``EagerDeliveryConsumer`` runs the callback up to its first suspension in place. If it finished, no task
was created. If it suspended, the rest of the same coroutine runs in a task raced against ``suspend_flow``
(and the consumer's stop and crash) with ``wait_first``, as Faust does, so a rebalance still abandons a
blocked delivery and the callback's cleanup runs. The rest of the loop (read offsets, gaps, commit_every,
a yield every 100 messages, stop conditions, error handling) behaves as faust-streaming 0.15.3's.
One difference: the first step runs in the fetcher's task and context, not a fresh task. The conductor
neither reads ``asyncio.current_task()`` nor sets context variables there, so it cannot tell.

``EagerDeliveryApp`` is a ``faust.App`` whose ``kafka://`` (aiokafka) transport uses this consumer.

The same consumer also makes Faust's offset commits safe under ``kill -9`` (docs/operations.md, "What is
at-least-once"). faust-streaming 0.15.3 can commit past an event whose effects were never recorded:

- ``Consumer._new_offset`` accepts acknowledged offsets that start one past the committed offset (the committed
  offset is the next one to read, so the message at it may still be in flight), and any starting point when
  nothing was committed yet (a fresh consumer group): an event acknowledged early (a duplicate, a dead letter)
  commits past the events before it.
- ``seek_to_committed`` (aiokafka's) leaves the fetch position where it was for a partition with no committed
  offset, so after a rebalance in a fresh group the messages fetched into the stream buffers and dropped with
  them are never read again.
- The producer buffer's ``flush`` (run before every commit) gives up after 0.1 s without progress, so an
  offset could be committed before the table writes of its events were handed to Kafka.
- Messages handed out by the fetcher while a rebalance's seek runs, or left in a batch fetched before it, are
  delivered after the seek reset the read offsets: the fetcher is then past them, the next message passes for a
  gap after the committed offset (a commit past events never handled), and the same messages read again are
  dropped as older than the read offset. In the crash loop this committed every partition to its end.

Here a commit only covers a run of acknowledged offsets that starts exactly at the committed offset (or, in
a fresh group, at the first offset read since the partition was assigned); a partition with no committed
offset is reset to the beginning (the ``earliest`` policy the worker uses) on every seek, and one whose
committed offset retention deleted to the log's start; nothing is delivered while a seek runs, and a batch
a rebalance or seek interrupted is dropped and read again after a seek back to the committed offsets; and the
producer buffer is drained completely before a commit. These replace private Faust methods: ``FAUST_VERSION`` is the
version they were checked against, and the worker refuses to start with another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections.abc import Coroutine, Generator, Mapping
from importlib.metadata import version
from typing import Any, cast

import faust
from aiokafka.structs import TopicPartition
from faust.transport import by_url
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from faust.types.transports import ProducerT, TransportT
from mode import Service, ServiceT

logger = logging.getLogger(__name__)

#: The faust-streaming version whose private consumer and producer methods this module replaces.
FAUST_VERSION = "0.15.3"


def check_faust_version() -> None:
    """Refuse another faust-streaming: the methods replaced here are private and may change in any release."""
    installed = version("faust-streaming")
    if installed != FAUST_VERSION:
        raise RuntimeError(
            f"faust-streaming {installed} is installed; pipeline/faust_consumer.py replaces private methods "
            f"checked against {FAUST_VERSION} only (re-check them, then update FAUST_VERSION)"
        )

#: Messages delivered between two explicit yields to the event loop (as in Faust's loop).
YIELD_EVERY = 100


def start_delivery(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any] | None:
    """Run ``coro`` up to its first suspension.

    Returns None if it finished, else a coroutine that finishes it when awaited (in a task). An exception
    raised before the first suspension propagates from here.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return _finish(coro, yielded)


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _forward(coro, yielded)


@types.coroutine
def _forward(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    # Pass what ``coro`` yields (a future, or None for a bare yield) to the task running us, and what the
    # task sends or throws in (a wake-up, a CancelledError) back to ``coro``: the task drives ``coro``
    # exactly as if it had run it from the start, so a cancelled wait raises inside ``coro``, where its
    # own ``except``/``finally`` clean up (asyncio.Queue.put removing its putter, for instance).
    while True:
        try:
            try:
                sent = yield yielded
            except BaseException as exc:
                yielded = coro.throw(exc)
            else:
                yielded = coro.send(sent)
        except StopIteration as stop:
            return stop.value


class CommittedOrEarliestConsumerThread(aiokafka.AIOKafkaConsumerThread):
    """aiokafka's consumer thread whose seek also resets partitions that have no committed offset."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return cast(Mapping[TP, int], await self.call_thread(self._seek_committed_or_reset))

    async def _seek_committed_or_reset(self) -> Mapping[TopicPartition, int | None]:
        consumer = self._ensure_consumer()
        committed: dict[TopicPartition, int | None] = dict(await consumer.seek_to_committed())
        # aiokafka seeks only to offsets > 0: a partition committed at 0 or never committed keeps the position
        # it had, past whatever was fetched and then dropped by a rebalance.
        for tp, offset in committed.items():
            if offset == 0:
                consumer.seek(tp, 0)
        # A committed offset that retention deleted: reading resumes at the log's start, which is then where
        # commits start (the offsets before it will never come).
        positive = [tp for tp, offset in committed.items() if offset is not None and offset > 0]
        if positive:
            for tp, start in (await consumer.beginning_offsets(positive)).items():
                offset = committed[tp]
                if offset is not None and start > offset:
                    consumer.seek(tp, start)
                    committed[tp] = start
        unset = [tp for tp, offset in committed.items() if offset is None or offset < 0]
        if unset:
            if self.app.conf.consumer_auto_offset_reset == "latest":
                await consumer.seek_to_end(*unset)
            else:
                await consumer.seek_to_beginning(*unset)
        return committed


class EagerDeliveryConsumer(aiokafka.Consumer):
    """Faust's aiokafka consumer with a delivery that creates no task when the callback does not suspend, and
    commits that never pass an offset still in flight."""

    def __post_init__(self) -> None:
        super().__post_init__()
        #: The offset a commit must start at while nothing is committed (the first read since the assignment).
        self._base_offset: dict[TP, int] = {}
        #: The next offset expected from the fetcher; a jump past it (retention, compaction) is a gap.
        self._next_offset: dict[TP, int] = {}
        #: Bumped by every rebalance and seek: what a batch fetched before it holds is stale.
        self._seek_generation = 0
        #: Clear while a seek runs: nothing is delivered then (the read offsets are being reset under it).
        self._not_seeking = asyncio.Event()
        self._not_seeking.set()
        #: A batch was dropped part way: seek back to the committed offsets before fetching again.
        self._reseek = False

    def lag_by_topic(self) -> dict[str, int]:
        """Messages after the committed offset (or, before a first commit, the read offset) up to the high
        water mark, summed per input topic over this worker's partitions. Changelogs are left out (they are
        read, never committed), and so is a partition whose high water mark or position is not known yet."""
        lag: dict[str, int] = {}
        for tp in self.assignment():
            if tp.topic.endswith("-changelog"):
                continue
            try:
                high: int | None = self.highwater(tp)
            except Exception:  # not fetched yet, or revoked meanwhile: nothing to report for it
                logger.debug("no high water mark for %s", tp, exc_info=True)
                high = None
            position = self._committed_offset[tp]
            if position is None:
                position = self._read_offset[tp]
            if high is None or position is None:
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, int(high) - int(position))
        return lag

    def _new_consumer_thread(self) -> aiokafka.AIOKafkaConsumerThread:
        return CommittedOrEarliestConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        # Messages delivered while the seek runs would move the read offsets that the seek then resets, and
        # leave the fetcher past them: the next message would pass for a gap after the committed offset.
        self._seek_generation += 1
        self._not_seeking.clear()
        try:
            await super().perform_seek()
            self._base_offset.clear()
            self._next_offset.clear()
        finally:
            self._seek_generation += 1
            self._not_seeking.set()

    async def _seek_back(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:  # no partition assigned (a rebalance is on): its recovery seeks
            logger.info("seek back to the committed offsets skipped: %r", exc)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._seek_generation += 1
        for tp in revoked:
            self._base_offset.pop(tp, None)
            self._next_offset.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._seek_generation += 1
        await super().on_partitions_assigned(assigned, generation_id)

    def _note_read(self, tp: TP, offset: int, acks_enabled: bool) -> None:
        """Record where commits of ``tp`` start, and any gap before ``offset`` (offsets that will never come)."""
        expected = self._next_offset.get(tp)
        if expected is None:
            committed = self._committed_offset[tp]
            expected = committed if committed is not None else offset
            self._base_offset[tp] = expected
        if acks_enabled and offset > expected:
            gap = self._gap[tp]
            gap.addi(expected, offset)  # the interval excludes its end: the offsets expected .. offset - 1
            gap.merge_overlaps()
        self._next_offset[tp] = max(expected, offset + 1)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: one past the run of acknowledged offsets that starts where the last commit
        ended (or at the first offset read in a fresh group); None while the offset there is in flight."""
        acked = self._acked[tp]
        if not acked:
            return None
        gap = self._gap[tp]
        if gap:
            highest = max(acked)
            filled = sorted(gap.overlap(0, highest + 1), key=lambda interval: interval.begin)
            for interval in filled:
                acked.extend(range(interval.begin, interval.end))
            if filled:
                gap.chop(0, max(filled[-1].end, highest + 1))
        acked.sort()
        committed = self._committed_offset[tp]
        start = committed if committed is not None else self._base_offset.get(tp)
        if start is None:
            return None
        while acked and acked[0] < start:  # already committed (acknowledged again after a redelivery)
            self._acked_index[tp].discard(acked.pop(0))
        if not acked or acked[0] != start:
            return None
        end = 0
        while end + 1 < len(acked) and acked[end + 1] <= acked[end] + 1:
            end += 1
        run = acked[: end + 1]
        del acked[: end + 1]
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        if not asyncio.iscoroutinefunction(callback):  # start_delivery needs a coroutine
            await super()._drain_messages(fetcher)
            return
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        note_read = self._note_read
        diag = self.diag
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await self._not_seeking.wait()
                if self._reseek:
                    self._reseek = False
                    await self._seek_back()
                    continue
                diag.set_flag(CONSUMER_FETCHING)
                messages = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany may be called in a loop that never yields otherwise
                if self.should_stop:
                    continue
                generation: int | None = None
                async for tp, message in messages:
                    if generation is None:
                        generation = self._seek_generation
                    if generation != self._seek_generation or not self._not_seeking.is_set():
                        # A rebalance or seek began after the fetch: the rest of this batch was fetched from
                        # a position the seek moves away from (or is about to). Delivered, it would move the
                        # read offsets the seek resets and pass for a gap after the committed offset.
                        # Dropped, it is read again after a seek back to the committed offsets.
                        self._reseek = True
                        break
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        logger.debug("dropped message at %r (read offset %r): k=%r v=%r", offset, last,
                                     message.key, message.value)
                        continue
                    note_read(tp, offset, acks_enabled_for(message.topic))
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    rest = start_delivery(callback(message))
                    if rest is not None:
                        await self.wait_first(rest, self.suspend_flow.wait())
                    if generation != self._seek_generation:
                        self._reseek = True  # the seek set the read offsets: this message's is not one now
                        break
                    read_offset[tp] = offset
                diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                logger.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                logger.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            logger.exception("Drain messages raised: %r", exc)
            raise
        finally:
            diag.unset_flag(CONSUMER_FETCHING)


def drain_fully_on_flush(producer: ProducerT) -> ProducerT:
    """Make ``producer.flush()`` (awaited by every commit) wait until every record handed to its buffer was
    handed to Kafka's client, including the one being handed over.

    Faust's ``ProducerBuffer.flush`` returns after 0.1 s without progress, even with records left; the commit
    that follows it would then cover events whose table writes are still in the buffer. Call before the
    producer starts (its buffer's sending task reads ``_send_pending`` once, when it starts).
    """
    buffer = cast(ProducerBuffer, producer.buffer)
    send_pending = buffer._send_pending
    in_flight = 0

    async def counted_send(fut: Any) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            await send_pending(fut)
        finally:
            in_flight -= 1

    async def flush() -> None:
        while buffer.size or in_flight:
            if buffer.state != "running":
                raise RuntimeError("cannot flush: the producer buffer is not running")
            buffer.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=0.1)

    buffer._send_pending = counted_send  # type: ignore[method-assign]
    buffer.flush = flush  # type: ignore[method-assign]
    return producer


def consumer_lag(app: faust.App) -> dict[str, int]:
    """:meth:`EagerDeliveryConsumer.lag_by_topic` of the app's consumer (empty for another consumer)."""
    consumer = app.consumer
    return consumer.lag_by_topic() if isinstance(consumer, EagerDeliveryConsumer) else {}


class EagerDeliveryTransport(aiokafka.Transport):
    """Faust's aiokafka transport with :class:`EagerDeliveryConsumer`."""

    Consumer = EagerDeliveryConsumer


class EagerDeliveryApp(faust.App):
    """A ``faust.App`` whose aiokafka transport (``kafka://`` brokers) uses :class:`EagerDeliveryConsumer`."""

    def _new_transport(self) -> TransportT:
        if by_url(self.conf.broker_consumer[0]) is aiokafka.Transport:
            return EagerDeliveryTransport(self.conf.broker_consumer, self)
        return super()._new_transport()
