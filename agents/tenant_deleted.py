"""tenant-deleted-events: mark the tenant deleting and emit teardown commands in reverse order."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.topics import TENANT_DELETED
from pipeline.events.models import TenantDeleted
from pipeline.tenants.logic import handle_tenant_deleted


@app.agent(topic(TENANT_DELETED), concurrency=1)
async def tenant_deleted(stream: Any) -> None:
    async for message in events_acked_by_process(stream):
        await process(
            message, TENANT_DELETED, TenantDeleted, lambda event: handle_tenant_deleted(event, STORES, now())
        )
