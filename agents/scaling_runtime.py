"""The scaling engine of this worker, and what every scaling agent does with an engine ``Outcome``.

Not an agent itself: the agents ``resource_metrics`` (:meth:`ScalingRuntime.accumulate_samples`,
:meth:`~ScalingRuntime.learn_windows`, :meth:`~ScalingRuntime.finish_windows`), ``scaling_policies``,
``scaling_request`` (:meth:`~ScalingRuntime.submit`), ``scaling_ticks``, ``scaling_demands``, ``scaling_grants``
and ``scaling_applied`` share one :class:`ScalingRuntime` (built by the composition root): one
:class:`ScalingEngine` per worker (an open window resumes from the utilization table), its forecasters in one
child process (``model_host``), and one :class:`ApplyQueue` (Kubernetes calls in a thread pool, their outcomes
sent back through ``scaling-applied`` to the agent that owns the tenant).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from mode import Service

from agents.runtime import AgentRuntime
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_APPLIED, SCALING_DEMANDS
from pipeline.events.models import ResourceMetrics
from pipeline.outputs import Emit
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.engine_io import EngineConfig, Outcome
from pipeline.scaling.engine_io import Tables as EngineTables
from pipeline.scaling.kube import ApplyQueue, DeploymentScaler
from pipeline.scaling.model_host import LearnResult, ProcessModelHost
from pipeline.scaling.records import DEMANDS_KEY, ApplyReport
from pipeline.scaling.windows import Accumulated, ClosedWindow
from tables import Tables

logger = logging.getLogger(__name__)


class ScalingRuntime:
    """The engine, the forecaster process, the apply queue and the demands topic of one worker."""

    def __init__(self, app: ProvisioningApp, io: AgentRuntime, tables: Tables) -> None:
        self.app = app
        self.io = io
        self.settings = settings = app.settings
        self.enabled = settings.scaling_enabled
        self.tables = EngineTables(
            policies=tables.scaling_policies, state=tables.scaling_state, decisions=tables.scaling_decisions,
            index=tables.scaling_index, snapshots=tables.model_snapshots, tenants=tables.tenants,
            quotas=tables.quotas, anomalies=tables.anomalies, windows=tables.utilization.stored_window,
        )
        self.engine = ScalingEngine(EngineConfig.from_settings(settings), self.tables)
        self.model_host = ProcessModelHost(self.engine.forecaster_config, self.engine.config.snapshot_every)
        #: One partition (declared by Faust before it subscribes, since it is internal): the fair-share pool's input.
        self.demands_topic = app.topic(
            SCALING_DEMANDS, partitions=1, internal=True, key_type=bytes, value_type=bytes,
            key_serializer="raw", value_serializer="raw",
        )
        self.scaler = DeploymentScaler(settings.kubeconfig)
        self.queue = ApplyQueue(self.scaler.run, self.report, settings.scaling_apply_concurrency)

    def register(self) -> None:
        """Drop the engine's caches on every rebalance; start and stop the forecaster process with the worker."""
        self.app.on_partitions_revoked.connect(self._forget_on_rebalance)
        self.app.on_partitions_assigned.connect(self._forget_on_rebalance)
        scaling = self

        @self.app.service
        class ModelHostService(Service):
            """The forecasters' child process, started with the worker (so the first windows do not wait for
            it) and stopped with it."""

            async def on_start(self) -> None:
                if scaling.enabled and scaling.engine.config.forecast_enabled:
                    await scaling.model_host.start()

            async def on_stop(self) -> None:
                scaling.model_host.close()

    def clock(self) -> datetime:
        """The scheduled-policy timer's clock: the wall clock plus SCALING_CLOCK_OFFSET_SECONDS (tests)."""
        return datetime.now(UTC) + timedelta(seconds=self.settings.scaling_clock_offset_seconds)

    async def report(self, outcome: ApplyReport) -> None:
        await self.io.send(SCALING_APPLIED, outcome.tenant_id, outcome)

    async def _forget_on_rebalance(self, *_args: Any, **_kwargs: Any) -> None:
        self.engine.forget()  # other workers may write what this engine cached

    async def send_out(self, outcome: Outcome) -> list[asyncio.Future[Any]]:
        """Queue the outcome's Kubernetes calls, then hand its demands and its records to the producer, in that
        order; the futures resolve when Kafka acknowledged them.

        Several agents decide for the same workload; the calls are queued before the first ``await``, so they
        run in the order of the decisions (the pool also drops a demand older than the one it holds, and the
        owner a grant for a demand it has replaced).
        """
        for request in outcome.applies:
            self.queue.submit(request)
        sent = [cast(asyncio.Future[Any], await self.demands_topic.send(key=DEMANDS_KEY.encode(),
                                                                         value=demand.model_dump_json().encode()))
                for demand in outcome.demands]
        return sent + await self.io.send_all(outcome.emits)

    def submit(self, outcome: Outcome) -> list[Emit]:
        """For agents whose records :meth:`AgentRuntime.process` sends: queue the outcome's Kubernetes calls now
        and return its demands (to the pool's one partition) and its records, in the order :meth:`send_out`
        sends them."""
        for request in outcome.applies:
            self.queue.submit(request)
        return [Emit(SCALING_DEMANDS, DEMANDS_KEY, demand) for demand in outcome.demands] + outcome.emits

    async def carry_out(self, outcome: Outcome | None) -> None:
        """:meth:`send_out`, then wait until Kafka acknowledged everything."""
        if outcome:
            for fut in await self.send_out(outcome):
                await fut

    def accumulate_samples(self, samples: Sequence[ResourceMetrics], placed: Sequence[tuple[str, float]] | None = None,
                           placed_window: float = 0.0) -> Accumulated:
        """New samples into the engine's open windows; the windows they close wait for :meth:`learn_windows`.
        ``placed``/``placed_window``: where the utilization fold placed them (:meth:`ScalingEngine.accumulate`).

        Call inside stream processing, before the samples' utilization windows are written (the engine resumes
        an open window it lacks from the stored one)."""
        if not self.enabled:
            return Accumulated()
        try:
            return self.engine.accumulate(samples, placed, placed_window)
        except Exception:
            self.engine.forget()  # a half-made change must not stay cached
            logger.exception("scaling failed on the samples of %s", samples[0].tenant_id if samples else "?")
            return Accumulated()

    def learn_windows(self, closed: Sequence[ClosedWindow]) -> Awaitable[list[LearnResult]]:
        """Hand the closed windows to the forecaster process now, to learn and forecast off the event loop
        while the caller goes on; await the returned object for the results ([] with forecasting off, or when
        the process failed: the windows are then decided without a forecast)."""
        requests = self.engine.learn_requests(closed)
        return self._learned(self.model_host.submit(requests) if requests else None, len(requests))

    async def _learned(self, learning: Awaitable[list[LearnResult]] | None, count: int) -> list[LearnResult]:
        if learning is None:
            return []
        try:
            return await learning
        except Exception:
            self.engine.models_lost()
            logger.exception("forecasting %d closed windows failed; they are decided without a forecast", count)
            return []

    def finish_windows(self, accumulated: Accumulated, results: Sequence[LearnResult]) -> Outcome:
        """The decisions on the closed windows (call inside stream processing, and send the result out before
        anything else can run: :meth:`send_decisions`)."""
        try:
            return self.engine.finish(accumulated, results)
        except Exception:
            self.engine.forget()
            logger.exception("scaling failed on the closed windows of a metrics batch")
            return Outcome()

    async def send_decisions(self, outcome: Outcome) -> list[asyncio.Future[Any]]:
        """:meth:`send_out` for what :meth:`finish_windows` returned (call it before anything else may run);
        a failure is logged and the engine's caches dropped (they may hold changes whose records did not
        leave), and the metrics batch goes on."""
        try:
            return await self.send_out(outcome)
        except Exception:
            self.engine.forget()
            logger.exception("sending the scaling decisions of a metrics batch failed")
            return []

    async def wait_for_kafka(self, sent: list[asyncio.Future[Any]]) -> None:
        """Wait until Kafka acknowledged what :meth:`send_decisions` handed over (before the metrics batch is
        acknowledged); a refused record is logged and the engine's caches dropped."""
        try:
            for fut in sent:
                await fut
        except Exception:
            self.engine.forget()
            logger.exception("Kafka refused a scaling record of a metrics batch")
