"""Where the forecasters live and learn: a :class:`ModelHost`, in the engine's process or in a child process.

The engine (:mod:`pipeline.scaling.engine`) owns the workloads' state; a host owns their models. The engine
sends a host :class:`LearnRequest` s (the closed windows) and gets back :class:`LearnResult` s (forecasts,
snapshots). When the engine cannot be sure the host holds a workload's model at the state's observation
count (a new process, a rebalance, a lost child), the request carries a :class:`Restore`: the stored
snapshot and the windows closed since, which the host replays.

In the worker the host runs in a child process (:class:`ProcessModelHost`): learning a window with 12 horizon
models costs about 0.4 ms, and every workload's window closes at the same boundary, so on the event loop
forecasting came in bursts that held up every agent. In the child it runs on the other core, while the
event loop goes on. Tests and backtests use an in-process :class:`ModelHost` directly.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pipeline.scaling.forecast import Forecast, ForecasterConfig, OnlineForecaster, SnapshotError
from pipeline.scaling.metrics import FORECASTER_ERRORS

logger = logging.getLogger(__name__)

RestoreSource = Literal["new", "snapshot", "relearned"]


@dataclass(frozen=True)
class Restore:
    """What a host needs to rebuild a workload's model: its snapshot and the windows learned since."""

    snapshot: bytes | None
    snapshot_window_end: datetime | None
    recent: tuple[tuple[datetime, float], ...]
    observations: int
    """Windows the state says the model has learned (0: a new workload)."""


@dataclass(frozen=True)
class LearnRequest:
    key: str
    value: float
    end: datetime
    quantiles: tuple[float, ...]
    restore: Restore | None = None
    """None: the engine knows the host holds the model, up to date."""
    evict: tuple[str, ...] = ()
    """Models to drop before this one is learned (the engine's per-tenant and global caps)."""


@dataclass(frozen=True)
class LearnResult:
    key: str
    forecast: Forecast
    observations: int
    seconds: float
    """learn_one + forecast (and the restore, if there was one), in the host."""
    snapshot: bytes | None = None
    """Taken after this window when the observation count is a multiple of ``snapshot_every``."""
    snapshot_seconds: float = 0.0
    restored_from: RestoreSource | None = None
    replayed: int = 0


class ModelHostLost(RuntimeError):
    """The child process holding the models died; every model must be restored."""


class ModelHost:
    """The forecasters of the workloads, by ``tenant/workload``."""

    def __init__(self, config: ForecasterConfig, snapshot_every: int) -> None:
        self.config = config
        self.snapshot_every = snapshot_every
        self.models: dict[str, OnlineForecaster] = {}

    def learn(self, requests: Sequence[LearnRequest]) -> list[LearnResult]:
        """Learn each window in order and forecast after it; one result per request."""
        return [self._learn_one(request) for request in requests]

    def _learn_one(self, request: LearnRequest) -> LearnResult:
        started = time.perf_counter()
        source: RestoreSource | None = None
        replayed = 0
        for key in request.evict:
            self.models.pop(key, None)
        if request.restore is not None:
            model, source, replayed = self.restore(request.key, request.restore)
        else:
            model = self.models[request.key]  # a KeyError means the engine's bookkeeping is wrong: it restores
        model.learn_one(request.value, at=request.end)
        forecast = model.forecast(request.quantiles)
        learned = time.perf_counter()
        snapshot = model.to_snapshot() if model.observations % self.snapshot_every == 0 else None
        return LearnResult(key=request.key, forecast=forecast, observations=model.observations,
                           seconds=learned - started, snapshot=snapshot,
                           snapshot_seconds=time.perf_counter() - learned, restored_from=source, replayed=replayed)

    def restore(self, key: str, restore: Restore) -> tuple[OnlineForecaster, RestoreSource, int]:
        """Rebuild the model from the snapshot (when usable) and replay the windows after it."""
        model: OnlineForecaster | None = None
        since: datetime | None = None
        source: RestoreSource = "new"
        if restore.snapshot is not None:
            try:
                model = OnlineForecaster.from_snapshot(restore.snapshot)
            except SnapshotError as exc:
                logger.warning("the forecaster snapshot of %s cannot be read (%s); starting a new model", key, exc)
            else:
                if model.config == self.config:
                    since, source = restore.snapshot_window_end, "snapshot"
                else:
                    logger.warning("the snapshot of %s was taken with another configuration; starting anew", key)
                    model = None
        if model is None:
            model = OnlineForecaster(self.config)
            if restore.observations:
                source = "relearned"  # no usable snapshot: only the recent windows can be learned again
        replayed = 0
        for end, value in restore.recent:
            if since is None or end > since:
                model.learn_one(value, at=end)
                replayed += 1
        self.models[key] = model
        return model, source, replayed


_CHILD_HOST: ModelHost | None = None


def _start_child(config: ForecasterConfig, snapshot_every: int) -> None:
    global _CHILD_HOST
    _CHILD_HOST = ModelHost(config, snapshot_every)
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()


def _exit_with_parent(parent: int) -> None:
    """A worker killed with SIGKILL cannot stop its child: the child notices and exits."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _learn_in_child(requests: Sequence[LearnRequest]) -> list[LearnResult]:
    assert _CHILD_HOST is not None, "the pool's initializer creates the host"
    return _CHILD_HOST.learn(requests)


class ProcessModelHost:
    """A :class:`ModelHost` in one child process (spawned, so it inherits none of the worker's threads)."""

    def __init__(self, config: ForecasterConfig, snapshot_every: int) -> None:
        self.config = config
        self.snapshot_every = snapshot_every
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child, initargs=(self.config, self.snapshot_every),
            )
        return self._executor

    def submit(self, requests: Sequence[LearnRequest]) -> Awaitable[list[LearnResult]]:
        """Hand the requests to the child now (the child starts on them while the caller goes on) and return
        what to await for :meth:`ModelHost.learn`'s results; the child handles the requests of several
        submissions in the order they were submitted."""
        loop = asyncio.get_running_loop()
        pool = self._pool()
        try:
            future = loop.run_in_executor(pool, _learn_in_child, list(requests))
        except BrokenProcessPool as exc:
            future = loop.create_future()
            future.set_exception(exc)
        return self._results(future, pool)

    async def _results(self, future: asyncio.Future[list[LearnResult]], pool: ProcessPoolExecutor
                       ) -> list[LearnResult]:
        try:
            return await future
        except BrokenProcessPool as exc:
            if self._executor is pool:  # else a later submission already replaced it
                self.close()
            FORECASTER_ERRORS.labels("host_lost").inc()
            raise ModelHostLost("the forecaster process died") from exc

    async def learn(self, requests: Sequence[LearnRequest]) -> list[LearnResult]:
        """:meth:`ModelHost.learn` in the child; :class:`ModelHostLost` when the child died (a new one starts
        with the next call, empty)."""
        return await self.submit(requests)

    async def start(self) -> None:
        """Start the child ahead of the first window (spawning it and importing River take a second or two)."""
        await self.learn([])

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
