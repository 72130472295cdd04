"""The scaling engine of this worker, and what every scaling agent does with an engine ``Outcome``.

Not an agent itself: the agents ``resource_metrics`` (:func:`accumulate_samples`, :func:`learn_windows`,
:func:`finish_windows`), ``scaling_policies``, ``scaling_request`` (:func:`submit`), ``scaling_ticks``,
``scaling_demands``, ``scaling_grants`` and ``scaling_applied`` share one :class:`ScalingEngine` (per worker; an
open window resumes from the utilization table), its forecasters in one child process (:data:`MODEL_HOST`), and
one :class:`ApplyQueue` (Kubernetes calls in a thread pool, their outcomes sent back through ``scaling-applied``
to the agent that owns the tenant).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from mode import Service

from agents.runtime import send_all, topic
from agents.stores import STORES
from pipeline.app import app
from pipeline.contract.topics import SCALING_APPLIED, SCALING_DEMANDS
from pipeline.events.models import ResourceMetrics
from pipeline.outputs import Emit
from pipeline.scaling.engine import Accumulated, ClosedWindow, EngineConfig, Outcome, ScalingEngine, Tables
from pipeline.scaling.kube import ApplyQueue, DeploymentScaler
from pipeline.scaling.model_host import LearnResult, ProcessModelHost
from pipeline.scaling.records import DEMANDS_KEY, ApplyReport
from tables.model_snapshots import model_snapshots
from tables.scaling_decisions import scaling_decisions
from tables.scaling_index import scaling_index
from tables.scaling_policies import scaling_policies
from tables.scaling_state import scaling_state
from tables.utilization import stored_window

logger = logging.getLogger(__name__)

SETTINGS = app.settings
ENABLED = SETTINGS.scaling_enabled
TABLES = Tables(
    policies=scaling_policies, state=scaling_state, decisions=scaling_decisions, index=scaling_index,
    snapshots=model_snapshots, tenants=STORES.tenants, quotas=STORES.quotas, windows=stored_window,
)
ENGINE = ScalingEngine(EngineConfig.from_settings(SETTINGS), TABLES)
MODEL_HOST = ProcessModelHost(ENGINE.forecaster_config, ENGINE.config.snapshot_every)

#: One partition (declared by Faust before it subscribes, since it is internal): the fair-share pool's input.
DEMANDS_TOPIC = app.topic(
    SCALING_DEMANDS, partitions=1, internal=True, key_type=bytes, value_type=bytes,
    key_serializer="raw", value_serializer="raw",
)


def clock() -> datetime:
    """The scheduled-policy timer's clock: the wall clock plus SCALING_CLOCK_OFFSET_SECONDS (tests)."""
    return datetime.now(UTC) + timedelta(seconds=SETTINGS.scaling_clock_offset_seconds)


async def report(outcome: ApplyReport) -> None:
    fut = await topic(SCALING_APPLIED).send(key=outcome.tenant_id.encode(), value=outcome.model_dump_json().encode())
    await fut


async def _forget_on_rebalance(*_args: Any, **_kwargs: Any) -> None:
    ENGINE.forget()  # other workers may write what this engine cached


app.on_partitions_revoked.connect(_forget_on_rebalance)
app.on_partitions_assigned.connect(_forget_on_rebalance)


SCALER = DeploymentScaler(SETTINGS.kubeconfig)
QUEUE = ApplyQueue(SCALER.run, report, SETTINGS.scaling_apply_concurrency)


async def send_out(outcome: Outcome) -> list[asyncio.Future[Any]]:
    """Queue the outcome's Kubernetes calls, then hand its demands and its records to the producer, in that
    order; the futures resolve when Kafka acknowledged them.

    Several agents decide for the same workload; the calls are queued before the first ``await``, so they
    run in the order of the decisions (the pool also drops a demand older than the one it holds, and the
    owner a grant for a demand it has replaced).
    """
    for request in outcome.applies:
        QUEUE.submit(request)
    sent = [cast(asyncio.Future[Any], await DEMANDS_TOPIC.send(key=DEMANDS_KEY.encode(),
                                                                value=demand.model_dump_json().encode()))
            for demand in outcome.demands]
    return sent + await send_all(outcome.emits)


def submit(outcome: Outcome) -> list[Emit]:
    """For agents whose records :func:`agents.runtime.process` sends: queue the outcome's Kubernetes calls now
    and return its demands (to the pool's one partition) and its records, in the order :func:`send_out` sends
    them."""
    for request in outcome.applies:
        QUEUE.submit(request)
    return [Emit(SCALING_DEMANDS, DEMANDS_KEY, demand) for demand in outcome.demands] + outcome.emits


async def carry_out(outcome: Outcome | None) -> None:
    """:func:`send_out`, then wait until Kafka acknowledged everything."""
    if outcome:
        for fut in await send_out(outcome):
            await fut


@app.service
class ModelHostService(Service):
    """The forecasters' child process, started with the worker (so the first windows do not wait for it)
    and stopped with it."""

    async def on_start(self) -> None:
        if ENABLED and ENGINE.config.forecast_enabled:
            await MODEL_HOST.start()

    async def on_stop(self) -> None:
        MODEL_HOST.close()


def accumulate_samples(samples: Sequence[ResourceMetrics]) -> Accumulated:
    """New samples into the engine's open windows; the windows they close wait for :func:`learn_windows`.

    Call inside stream processing, before the samples' utilization windows are written (the engine resumes
    an open window it lacks from the stored one)."""
    if not ENABLED:
        return Accumulated()
    try:
        return ENGINE.accumulate(samples)
    except Exception:
        ENGINE.forget()  # a half-made change must not stay cached
        logger.exception("scaling failed on the samples of %s", samples[0].tenant_id if samples else "?")
        return Accumulated()


def learn_windows(closed: Sequence[ClosedWindow]) -> Awaitable[list[LearnResult]]:
    """Hand the closed windows to the forecaster process now, to learn and forecast off the event loop
    while the caller goes on; await the returned object for the results ([] with forecasting off, or when
    the process failed: the windows are then decided without a forecast)."""
    requests = ENGINE.learn_requests(closed)
    return _learned(MODEL_HOST.submit(requests) if requests else None, len(requests))


async def _learned(learning: Awaitable[list[LearnResult]] | None, count: int) -> list[LearnResult]:
    if learning is None:
        return []
    try:
        return await learning
    except Exception:
        ENGINE.models_lost()
        logger.exception("forecasting %d closed windows failed; they are decided without a forecast", count)
        return []


def finish_windows(accumulated: Accumulated, results: Sequence[LearnResult]) -> Outcome:
    """The decisions on the closed windows (call inside stream processing, and send the result out before
    anything else can run: :func:`send_decisions`)."""
    try:
        return ENGINE.finish(accumulated, results)
    except Exception:
        ENGINE.forget()
        logger.exception("scaling failed on the closed windows of a metrics batch")
        return Outcome()


async def send_decisions(outcome: Outcome) -> list[asyncio.Future[Any]]:
    """:func:`send_out` for what :func:`finish_windows` returned (call it before anything else may run);
    a failure is logged and the engine's caches dropped (they may hold changes whose records did not leave),
    and the metrics batch goes on."""
    try:
        return await send_out(outcome)
    except Exception:
        ENGINE.forget()
        logger.exception("sending the scaling decisions of a metrics batch failed")
        return []


async def wait_for_kafka(sent: list[asyncio.Future[Any]]) -> None:
    """Wait until Kafka acknowledged what :func:`send_decisions` handed over (before the metrics batch is
    acknowledged); a refused record is logged and the engine's caches dropped."""
    try:
        for fut in sent:
            await fut
    except Exception:
        ENGINE.forget()
        logger.exception("Kafka refused a scaling record of a metrics batch")
