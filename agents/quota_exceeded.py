"""quota-exceeded-events: mark the resource over quota and emit an enforcement event."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.topics import QUOTA_EXCEEDED
from pipeline.events.models import QuotaExceeded
from pipeline.tenants.logic import handle_quota_exceeded


@app.agent(topic(QUOTA_EXCEEDED), concurrency=1)
async def quota_exceeded(stream: Any) -> None:
    async for message in events_acked_by_process(stream):
        await process(
            message, QUOTA_EXCEEDED, QuotaExceeded, lambda event: handle_quota_exceeded(event, STORES, now())
        )
