"""quota-update-requests (from the REST API): replace a tenant's quota, then update its ResourceQuota."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.topics import QUOTA_UPDATES
from pipeline.events.models import QuotaUpdateRequested
from pipeline.tenants.logic import handle_quota_update


@app.agent(topic(QUOTA_UPDATES), concurrency=1)
async def quota_update(stream: Any) -> None:
    async for message in events_acked_by_process(stream):
        await process(
            message, QUOTA_UPDATES, QuotaUpdateRequested, lambda event: handle_quota_update(event, STORES, now())
        )
