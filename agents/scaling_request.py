"""scaling-request-events: validate against the tenant's quota and emit a scaling command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_REQUEST
from pipeline.events.models import ScalingRequest
from pipeline.tenants.scaling_request import handle_scaling_request

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores
    usage = deps.tables.usage

    @app.agent(io.topic(SCALING_REQUEST), concurrency=1)
    async def scaling_request(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, SCALING_REQUEST, ScalingRequest,
                lambda event: handle_scaling_request(event, stores, usage, now()),
            )
