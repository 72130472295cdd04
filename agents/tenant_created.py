"""tenant-created-events: record the tenant and its quota, emit one provisioning command per resource."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.topics import TENANT_CREATED
from pipeline.events.models import TenantCreated
from pipeline.tenants.logic import handle_tenant_created
from pipeline.tenants.tiers import quota_for_tier


@app.agent(topic(TENANT_CREATED), concurrency=1)
async def tenant_created(stream: Any) -> None:
    async for message in events_acked_by_process(stream):
        await process(
            message, TENANT_CREATED, TenantCreated,
            lambda event: handle_tenant_created(event, STORES, quota_for_tier, now()),
        )
