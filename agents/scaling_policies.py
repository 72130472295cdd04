"""scaling-policy-requests (from the REST API): put or delete one scaling policy of the tenant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_POLICY_REQUESTS
from pipeline.scaling.records import PolicyChange

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, engine = deps.io, deps.scaling.engine

    @app.agent(io.topic(SCALING_POLICY_REQUESTS), concurrency=1)
    async def scaling_policies(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, SCALING_POLICY_REQUESTS, PolicyChange, lambda change: engine.on_policy_change(change).emits
            )
