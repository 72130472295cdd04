"""Every use of a private faust-streaming attribute outside the consumer (``pipeline/faust_consumer.py``), behind
small named functions, so that an upgrade re-checks one module.

Checked against faust-streaming ``FAUST_VERSION``. What is relied on:

- ``faust.streams._current_event``: the context variable holding a weak reference to the event in progress;
  Faust takes the changelog partition of a table write from it (:func:`processing`).
- ``App._assignment``: ``None`` until the first rebalance completed (:func:`has_joined_group`).
- ``TableManager._recovery``: the lazily built ``Recovery`` service, replaced by
  :class:`StateResetAwareRecovery` (:class:`StateResetAwareTableManager`, set as the app's ``TableManager``).
- ``Recovery.crash``: how the recovery service fails; a ``ConsistencyError`` raised by its recovery task
  arrives there (the service's own task wrapper crashes it).
- ``app.conf.stream_publish_on_commit`` (public) as the one switch of ``Topic.send``'s "attachments" (records
  held back until their event's offset is committed): :func:`send_record` bypasses ``Topic.send``, so it is
  only equivalent while that switch is off (:func:`check_sends_are_immediate`).

Elsewhere, by subclassing: ``App._new_producer`` (``pipeline/app.py``) and the consumer and producer methods
that ``pipeline/faust_consumer.py`` replaces (its own version check runs at worker start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import faust
from faust.exceptions import ConsistencyError
from faust.streams import _current_event
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import EventT, ProducerT

logger = logging.getLogger(__name__)

#: The faust-streaming version the private attributes used here were checked against.
FAUST_VERSION = "0.15.3"


@contextmanager
def processing(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the one Faust considers in progress while the block runs."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def check_sends_are_immediate(app: faust.App) -> None:
    """Refuse an app whose ``Topic.send`` holds records back until their event is committed ("attachments",
    ``stream_publish_on_commit``): :func:`send_record` would send them at once, which is only what Faust
    does when that is off (the worker's configuration, and Faust's default)."""
    if app.conf.stream_publish_on_commit:
        raise RuntimeError("stream_publish_on_commit is set: the agents' records would bypass its attachments")


async def send_record(producer: ProducerT, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
    """Hand one record to the app's producer; the future resolves when Kafka acknowledged it (or raises).

    What ``Topic.send`` ends with for a topic of raw bytes (``RawBytesSchema``), without its layers: no
    ``FutureMessage``/``PendingMessage`` per record, no key/value preparation through the serializer registry
    (raw bytes stay as they are), no sensor calls (``QuietMonitor`` ignores sends) and no completion callback.
    The record's bytes, its partition (the producer's partitioner over the key) and its order among the
    records sent before it are the same. ``ProducerT.send`` is Faust's public producer interface.
    """
    return cast(asyncio.Future[Any], await producer.send(topic, key, value, None, None, None))


def has_joined_group(app: faust.App) -> bool:
    """Whether the app's consumer completed its first rebalance (it has an assignment, possibly empty)."""
    return app._assignment is not None


def absolute(path: Path) -> Path:
    """``path`` made absolute without touching the disk (the message names a folder an operator deletes)."""
    return Path(os.path.abspath(path))


def state_reset_message(tabledir: Path) -> str:
    """The one sentence a worker stops with when its local state is ahead of its Kafka changelogs."""
    return (
        f"The local table state in {tabledir} is ahead of its Kafka changelog topics (they were deleted or "
        f"reset, or this folder belongs to another Kafka cluster), so stop the worker, delete {tabledir} and "
        "start it again to rebuild the state from the changelogs."
    )


class StateResetAwareRecovery(Recovery):
    """Faust's recovery, whose ``ConsistencyError`` (persisted offset above the changelog's end) says what to
    do: Faust's own text speaks of offsets and topic partitions, not of which folder to delete."""

    async def crash(self, reason: BaseException) -> None:
        if isinstance(reason, ConsistencyError):
            message = state_reset_message(absolute(Path(self.app.conf.tabledir)))
            logger.critical("%s (Faust: %s)", message, " ".join(str(reason).split()))
            reason = ConsistencyError(message)
        await super().crash(reason)


class StateResetAwareTableManager(TableManager):
    """Faust's table manager with :class:`StateResetAwareRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = StateResetAwareRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
