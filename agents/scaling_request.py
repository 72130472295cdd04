"""scaling-request-events: validate against the tenant's quota and emit a scaling command."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.topics import SCALING_REQUEST
from pipeline.events.models import ScalingRequest
from pipeline.tenants.scaling_request import handle_scaling_request
from tables.usage import usage


@app.agent(topic(SCALING_REQUEST), concurrency=1)
async def scaling_request(stream: Any) -> None:
    async for message in events_acked_by_process(stream):
        await process(
            message, SCALING_REQUEST, ScalingRequest,
            lambda event: handle_scaling_request(event, STORES, usage, now()),
        )
