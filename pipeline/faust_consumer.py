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
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Coroutine, Generator
from typing import Any, cast

import faust
from faust.transport import by_url
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka
from faust.types.transports import TransportT
from mode import Service, ServiceT

logger = logging.getLogger(__name__)

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


class EagerDeliveryConsumer(aiokafka.Consumer):
    """Faust's aiokafka consumer with a delivery that creates no task when the callback does not suspend."""

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
        diag = self.diag
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                diag.set_flag(CONSUMER_FETCHING)
                messages = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany may be called in a loop that never yields otherwise
                if self.should_stop:
                    continue
                async for tp, message in messages:
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
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    rest = start_delivery(callback(message))
                    if rest is not None:
                        await self.wait_first(rest, self.suspend_flow.wait())
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


class EagerDeliveryTransport(aiokafka.Transport):
    """Faust's aiokafka transport with :class:`EagerDeliveryConsumer`."""

    Consumer = EagerDeliveryConsumer


class EagerDeliveryApp(faust.App):
    """A ``faust.App`` whose aiokafka transport (``kafka://`` brokers) uses :class:`EagerDeliveryConsumer`."""

    def _new_transport(self) -> TransportT:
        if by_url(self.conf.broker_consumer[0]) is aiokafka.Transport:
            return EagerDeliveryTransport(self.conf.broker_consumer, self)
        return super()._new_transport()
