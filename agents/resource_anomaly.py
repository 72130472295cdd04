"""resource-anomaly-events: record the anomaly and apply the configured reaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import RESOURCE_ANOMALY
from pipeline.events.models import ResourceAnomaly
from pipeline.tenants.anomaly import handle_anomaly

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores
    anomalies = deps.tables.anomalies

    @app.agent(io.topic(RESOURCE_ANOMALY), concurrency=1)
    async def resource_anomaly(stream: Any) -> None:
        reactions = {str(severity): str(reaction) for severity, reaction in deps.settings.anomaly_reactions.items()}
        async for message in events_acked_by_process(stream):
            await io.process(
                message, RESOURCE_ANOMALY, ResourceAnomaly,
                lambda event: handle_anomaly(event, stores, anomalies, reactions, now()),
            )
