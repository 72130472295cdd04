"""The scaling engine of this worker, and what every scaling agent does with an engine ``Outcome``.

Not an agent itself: the agents ``resource_metrics`` (:func:`decide_on_samples`), ``scaling_policies``,
``scaling_ticks``, ``scaling_demands``, ``scaling_grants`` and ``scaling_applied`` share one
:class:`ScalingEngine` (its forecasters are in memory, per worker; an open window resumes from the utilization
table) and one :class:`ApplyQueue` (Kubernetes calls in a
thread pool, their outcomes sent back through ``scaling-applied`` to the agent that owns the tenant).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from agents.runtime import send_all, topic
from agents.stores import STORES
from pipeline.app import app
from pipeline.events.models import ResourceMetrics
from pipeline.scaling.engine import EngineConfig, Outcome, ScalingEngine, Tables
from pipeline.scaling.kube import ApplyQueue, DeploymentScaler
from pipeline.scaling.records import DEMANDS_KEY, ApplyReport
from pipeline.topics import SCALING_APPLIED, SCALING_DEMANDS
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


async def carry_out(outcome: Outcome | None) -> None:
    """:func:`send_out`, then wait until Kafka acknowledged everything."""
    if outcome:
        for fut in await send_out(outcome):
            await fut


def decide_on_samples(samples: Sequence[ResourceMetrics]) -> Outcome:
    """Accumulate new samples in the engine's open windows; what the windows they close decide, together.

    Call inside stream processing (the engine writes its tables), and send the result out before anything
    else can run (:func:`send_decisions`).
    """
    combined = Outcome()
    if not ENABLED:
        return combined
    for sample in samples:
        try:
            outcome = ENGINE.on_sample(sample)
        except Exception:
            ENGINE.forget()  # a half-made change must not stay cached
            logger.exception("scaling failed on a sample of %s/%s", sample.tenant_id, sample.workload)
            continue
        if outcome:
            combined.extend(outcome)
    return combined


async def send_decisions(outcome: Outcome) -> list[asyncio.Future[Any]]:
    """:func:`send_out` for what :func:`decide_on_samples` returned (call it before anything else may run);
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
