"""Which provisioning commands run when, on one worker: two lanes, a bounded replay backlog, deletes last.

* **Live and replay lanes.** A command of an event older than the worker's start (a new consumer group
  reading history, a restart after downtime, the reconciler restarting stale commands) runs in the replay
  lane: few at a time (``replay_concurrency``), verify before apply. New events' commands run in the live
  lane with its own slots, so they never queue behind a replay.
* **Bounded replay backlog.** At most ``replay_backlog`` replay commands are queued or running; one more is
  not queued (:meth:`CommandScheduler.start` returns False). Its status entry stays pending and the
  reconciler starts it on a later pass, so the backlog lives in the status table, not in memory.
* **Slots are for backend calls.** A command gives its slot back while it backs off or waits for an unreachable
  backend (``waiting``, up to ``PROVISIONING_BACKEND_WAIT_SECONDS``) and takes one again for its next call,
  so commands waiting for a backend still starting never hold up those of the backends that answer.
* **Deletes win.** A delete of a (tenant, resource) waits until every earlier command of that resource on this
  worker has stopped: one backing off wakes at once, one in a backend call finishes that call; either then
  meets the fence (``command_fence``) before its next backend call. So the delete is the last call the backend
  sees, and no late create re-creates what it removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from pipeline.contract.records import ProvisioningResult
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.metrics import COMMANDS_DEFERRED

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
#: Commands that never run in the replay lane (see :func:`is_replay`).
_ALWAYS_LIVE = (CommandAction.UPDATE_QUOTA, CommandAction.QUARANTINE, CommandAction.RELEASE_QUARANTINE)
#: Runs one command to its end: ``(command, verify_first, sleep)``; ``sleep`` is the backoff between attempts.
Runner = Callable[[ProvisioningCommand, bool, Sleep], Awaitable[ProvisioningResult]]


def is_replay(command: ProvisioningCommand, event_time: datetime | None, started_at: datetime) -> bool:
    """Whether ``command`` comes from an event older than this worker (``event_time``: the time of the tenant's
    create or delete event, or of the user's). Quota changes and quarantines are always live: a person waits on
    them (a quarantine must isolate now), and a replayed one no longer wanted is fenced anyway."""
    if command.action in _ALWAYS_LIVE or event_time is None:
        return False
    return event_time < started_at


class CommandScheduler:
    def __init__(self, runner: Runner, concurrency: int, replay_concurrency: int, replay_backlog: int) -> None:
        self.runner = runner
        self.replay_backlog = replay_backlog
        self._live_slots = asyncio.Semaphore(concurrency)
        self._replay_slots = asyncio.Semaphore(replay_concurrency)
        self.running: dict[str, asyncio.Task[ProvisioningResult | None]] = {}
        self._by_resource: dict[tuple[str, str], set[str]] = {}
        self._replays: set[str] = set()
        #: Set while a delete of the (tenant, resource) waits: backoffs of that resource end at once.
        self._wake: dict[tuple[str, str], asyncio.Event] = {}

    def __contains__(self, command_id: str) -> bool:
        return command_id in self.running

    @property
    def replays_queued(self) -> int:
        return len(self._replays)

    def start(self, command: ProvisioningCommand, replay: bool = False) -> bool:
        """Run ``command`` in the background unless it is running here already. False: a replay that did not
        fit in the backlog (not queued; the reconciler starts it later)."""
        cid = command.command_id
        if cid in self.running:
            return True
        if replay and len(self._replays) >= self.replay_backlog:
            COMMANDS_DEFERRED.labels(command.resource).inc()
            logger.debug("replay backlog full: %s command of %s deferred", command.resource, command.tenant_id)
            return False
        key = (command.tenant_id, command.resource)
        # Any command waits for the earlier ones of its resource (a create of a new generation for the delete
        # of the old one); a delete also cuts their backoffs short.
        earlier = [self.running[other] for other in self._by_resource.get(key, set())]
        if command.action is CommandAction.DELETE:
            self._wake.setdefault(key, asyncio.Event()).set()
        task = asyncio.create_task(
            self._run(command, replay, earlier), name=f"provision-{command.resource}-{command.tenant_id}"
        )
        self.running[cid] = task
        self._by_resource.setdefault(key, set()).add(cid)
        if replay:
            self._replays.add(cid)
        task.add_done_callback(lambda done: self._finished(command, done))
        return True

    async def _run(
        self, command: ProvisioningCommand, replay: bool, earlier: list[asyncio.Task[ProvisioningResult | None]]
    ) -> ProvisioningResult | None:
        if earlier:
            await asyncio.wait(earlier)
        slots = self._replay_slots if replay else self._live_slots
        key = (command.tenant_id, command.resource)
        held = False

        async def backoff(seconds: float) -> None:
            # A slot bounds the backend calls in flight, not the commands alive: one backing off, or waiting
            # up to PROVISIONING_BACKEND_WAIT_SECONDS for a backend still starting, lets others run meanwhile.
            nonlocal held
            slots.release()
            held = False
            await self._sleep(key, seconds)  # cancelled here: nothing held, nothing to give back
            await slots.acquire()
            held = True

        await slots.acquire()
        held = True
        try:
            return await self.runner(command, replay, backoff)
        finally:
            if held:
                slots.release()

    async def _sleep(self, key: tuple[str, str], seconds: float) -> None:
        wake = self._wake.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    def _finished(self, command: ProvisioningCommand, task: asyncio.Task[ProvisioningResult | None]) -> None:
        cid = command.command_id
        self.running.pop(cid, None)
        self._replays.discard(cid)
        key = (command.tenant_id, command.resource)
        ids = self._by_resource.get(key)
        if ids is not None:
            ids.discard(cid)
            if not ids:
                del self._by_resource[key]
                self._wake.pop(key, None)
        if task.cancelled():
            logger.info("%s command %s of %s cancelled", command.resource, cid, command.tenant_id)
        elif (exc := task.exception()) is not None:
            logger.error("%s command %s of %s crashed", command.resource, cid, command.tenant_id, exc_info=exc)

    async def drain(self) -> None:
        """Wait until nothing is running (tests, shutdown)."""
        while self.running:
            await asyncio.wait(list(self.running.values()))
