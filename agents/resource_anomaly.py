"""resource-anomaly-events: record the anomaly and apply the configured reaction."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.topics import RESOURCE_ANOMALY
from pipeline.events.models import ResourceAnomaly
from pipeline.tenants.anomaly import handle_anomaly
from tables.anomalies import anomalies


@app.agent(topic(RESOURCE_ANOMALY), concurrency=1)
async def resource_anomaly(stream: Any) -> None:
    reactions = {str(severity): str(reaction) for severity, reaction in app.settings.anomaly_reactions.items()}
    async for message in events_acked_by_process(stream):
        await process(
            message, RESOURCE_ANOMALY, ResourceAnomaly,
            lambda event: handle_anomaly(event, STORES, anomalies, reactions, now()),
        )
