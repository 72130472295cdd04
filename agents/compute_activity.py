"""resource-metrics (a second agent on the topic): samples of running compute allocations keep them active.

A sample whose ``workload`` is a running request's id marks it busy (idle auto-termination). Invalid events
are left to the resource-metrics agent, which dead-letters them; nothing is deduplicated here (folding a
sample twice changes nothing).
"""

from typing import Any

from agents.compute_service import runtime
from agents.runtime import topic
from pipeline.app import app
from pipeline.events.decode import Decoded, decode
from pipeline.events.models import ResourceMetrics
from pipeline.topics import RESOURCE_METRICS


@app.agent(topic(RESOURCE_METRICS), concurrency=1)
async def compute_activity(stream: Any) -> None:
    async for message in stream.events():
        decoded = decode(message.value, ResourceMetrics)
        if isinstance(decoded, Decoded):
            runtime().record_metrics(decoded.event)
