"""scaling-request-events: one more trigger of the scaling engine (``request``).

The engine reads the workload's Deployment, then decides with the request's count in place of the policies'
(bounds, budgets, quota and fair share still cap it), stores and emits the decision with its explanation and
applies it through the scale subresource, like every other decision. ``AgentRuntime.process`` dedupes by event
id and dead-letters invalid or refused events (unknown tenant, scaling off, too many requests waiting); the
engine also keeps the ids of the requests each workload took, and derives the decision's id from the event's. A
timer asks again for the Deployment reads that requests wait for (after a restart, a rebalance or a lost report).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process
from agents.scaling_runtime import ScalingRuntime
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_REQUEST
from pipeline.events.models import ScalingRequest
from pipeline.isolation import guarded
from pipeline.outputs import Emit, Refused
from pipeline.readiness import is_ready

if TYPE_CHECKING:
    from agents.deps import AgentDeps

logger = logging.getLogger(__name__)

#: A request waits this long for the read of its Deployment before the read is asked for again.
REREAD_AFTER_SECONDS = 30.0


def take(scaling: ScalingRuntime, request: ScalingRequest) -> list[Emit]:
    """The engine's outcome of one request: its Kubernetes calls queued, its records returned for sending."""
    if not scaling.enabled:
        raise Refused("scaling-disabled", "the scaling engine is off (SCALING_ENABLED=false)")
    try:
        outcome = scaling.engine.on_request(request)
    except Refused:
        raise
    except Exception:
        scaling.engine.forget()  # a half-made change must not stay cached; process() dead-letters the event
        raise
    return scaling.submit(outcome)


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, scaling = deps.io, deps.scaling

    @app.agent(io.topic(SCALING_REQUEST), concurrency=1)
    async def scaling_request(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(message, SCALING_REQUEST, ScalingRequest, lambda request: take(scaling, request))

    @app.timer(interval=10.0)
    @guarded("scaling-request-reads")
    async def reread_deployments() -> None:
        """Ask again for the reads that scaling requests wait for: after a restart or a rebalance (the queue of
        reads was in the old process) and when a report was lost; without it such a request would wait
        forever."""
        if not scaling.enabled or not is_ready(app)[0]:
            return
        for request in scaling.engine.reads_due(REREAD_AFTER_SECONDS):
            scaling.queue.submit(request)
