"""The compute records' store in the worker: an in-memory overlay over the changelog-backed table, written
through the ``compute-records`` topic in order (Faust tables can only be written by an agent processing an
event of the same partition), and the rule that records only move forward."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.compute.lifecycle import (
    TERMINAL,
    ComputeRecord,
)
from pipeline.compute.request_ids import record_key

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RecordSender = Callable[[ComputeRecord], Awaitable[None]]


class RecordTable(Protocol):
    """What the store needs from the table: ``pipeline.typed_table.TypedTable[ComputeRecord]``."""

    backend: Any

    def get(self, key: str) -> ComputeRecord | None: ...

    def put(self, key: str, value: ComputeRecord) -> None: ...


def _version(record: ComputeRecord) -> tuple[int, datetime, datetime]:
    return len(record.history), record.updated_at, record.last_active_at or _EPOCH


def supersedes(candidate: ComputeRecord, current: ComputeRecord | None) -> bool:
    """Whether ``candidate`` may replace ``current`` in the table: records only move forward (more state
    changes, or a later update), and a finished record is never replaced by an unfinished one (a late
    write of a worker that lost the tenant's partition)."""
    if current is None:
        return True
    if current.terminal and not candidate.terminal:
        return False
    return _version(candidate) >= _version(current)


def apply_record(table: RecordTable, record: ComputeRecord) -> bool:
    """Write ``record`` to the table unless it is stale (the ``compute-records`` agent's function)."""
    key = record_key(record.request_id)
    if key is None:
        logger.warning("dropping a compute record with a malformed request id %r", record.request_id[:80])
        return False
    if not supersedes(record, table.get(key)):
        return False
    table.put(key, record)
    return True


class RecordNotWritten(Exception):
    """A record could not be written to the ``compute-records`` topic."""


class TopicRecordStore:
    """The service's ``RecordStore`` in the worker: an in-memory overlay over the table, written through
    the ``compute-records`` topic in order (``send``). ``flush()`` waits until every write is sent.

    ``values()`` leaves out records finished before ``finished_since()`` (outside the budget period: no
    computation of the service needs them), deciding on the raw table value before parsing it.
    """

    def __init__(
        self,
        table: RecordTable,
        send: RecordSender,
        *,
        finished_since: Callable[[], datetime | None] = lambda: None,
        retries: int = 5,
        retry_delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self._send = send
        self._finished_since = finished_since
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._clock = clock
        self._overlay: dict[str, tuple[ComputeRecord, float]] = {}
        self._queue: asyncio.Queue[ComputeRecord] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._unsent = 0
        self._given_up = 0

    def get(self, key: str, /) -> ComputeRecord | None:
        entry = self._overlay.get(key)
        if entry is not None:
            return entry[0]
        table_key = record_key(key)
        return self.table.get(table_key) if table_key is not None else None

    def __setitem__(self, key: str, value: ComputeRecord, /) -> None:
        self._overlay[key] = (value, self._clock())
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._queue.put_nowait(value)
        self._unsent += 1
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._drain(self._queue), name="compute-records")

    def values(self) -> list[ComputeRecord]:
        since = self._finished_since()
        records: dict[str, ComputeRecord] = {}
        for key, raw in list(self.table.backend.items()):
            if not isinstance(key, str) or not isinstance(raw, dict):
                continue
            if since is not None and raw.get("state") in TERMINAL and not self._finished_after(raw, since):
                continue
            record = self.table.get(key)  # a value that no longer validates reads as absent (counted, logged)
            if record is not None:
                records[record.request_id] = record
        for request_id, (record, _) in list(self._overlay.items()):
            records[request_id] = record
        return list(records.values())

    def of_tenant(self, tenant_id: str) -> list[ComputeRecord]:
        """Every record of ``tenant_id`` this worker holds, finished long ago or not (the listing): chosen by
        the table key's ``<tenant>/`` prefix before any value is parsed; a value that no longer validates
        reads as absent (as in ``TypedTable.get``)."""
        prefix = f"{tenant_id}/"
        records: dict[str, ComputeRecord] = {}
        for key, raw in list(self.table.backend.items()):
            if not isinstance(key, str) or not key.startswith(prefix) or not isinstance(raw, dict):
                continue
            record = self.table.get(key)
            if record is not None:
                records[record.request_id] = record
        for request_id, (record, _) in list(self._overlay.items()):
            if record.tenant_id == tenant_id:
                records[request_id] = record
        return list(records.values())

    @staticmethod
    def _finished_after(raw: dict[str, Any], since: datetime) -> bool:
        finished = raw.get("finished_at") or raw.get("updated_at")
        if not isinstance(finished, str):
            return True
        try:
            return datetime.fromisoformat(finished.replace("Z", "+00:00")) >= since
        except ValueError:
            return True

    async def persist(self, record: ComputeRecord) -> None:
        """Write ``record`` and wait until it is sent; raises :class:`RecordNotWritten` when a write given
        up on meanwhile may have been this one (a side effect keyed by it must then not be started)."""
        given_up = self._given_up
        self[record.request_id] = record
        await self.flush()
        if self._given_up != given_up:
            raise RecordNotWritten(f"compute record {record.request_id} could not be written")

    async def _drain(self, queue: asyncio.Queue[ComputeRecord]) -> None:
        while True:
            record = await queue.get()
            try:
                if not await self._send_with_retries(record):
                    self._given_up += 1
            finally:
                self._unsent -= 1
                queue.task_done()

    async def _send_with_retries(self, record: ComputeRecord) -> bool:
        for attempt in range(1, self._retries + 1):
            try:
                await self._send(record)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("writing compute record %s failed (try %d): %s", record.request_id, attempt, exc)
                if attempt < self._retries:
                    await asyncio.sleep(self._retry_delay_s * attempt)
        logger.error("compute record %s (%s) was not written; this worker keeps it in memory",
                     record.request_id, record.state.value)
        return False

    async def flush(self) -> None:
        """Return once every write so far is sent (acknowledged by Kafka in the worker)."""
        if self._queue is not None:
            await self._queue.join()

    @property
    def pending(self) -> int:
        """Writes not sent yet (queued or being sent)."""
        return self._unsent

    def applied(self, record: ComputeRecord) -> None:
        """The table now holds ``record`` (the agent wrote it): drop the overlay copy if it is the same."""
        entry = self._overlay.get(record.request_id)
        if entry is not None and entry[0] == record:
            del self._overlay[record.request_id]

    def trim(self, busy: Callable[[str], bool], older_than_s: float = 60.0, give_up_s: float = 3600.0) -> int:
        """Forget overlay copies, older than ``older_than_s``, of requests nobody here works on (``busy``)
        once the table holds them or something newer (missed ``applied`` calls), or after ``give_up_s``
        (the tenant moved to another worker, whose table gets the writes)."""
        if self.pending:
            return 0
        now = self._clock()
        stale = []
        for request_id, (record, at) in list(self._overlay.items()):
            if at >= now - older_than_s or busy(request_id):
                continue
            key = record_key(request_id)
            stored = self.table.get(key) if key is not None else None
            caught_up = stored is not None and (
                _version(stored) >= _version(record) or (stored.terminal and not record.terminal)
            )
            if caught_up or at < now - give_up_s:
                stale.append(request_id)
        for request_id in stale:
            del self._overlay[request_id]
        return len(stale)

    async def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.flush()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender


