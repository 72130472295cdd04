"""tenant-created-events: record the tenant and its quota, emit one provisioning command per resource."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import TENANT_CREATED
from pipeline.events.models import TenantCreated
from pipeline.tenants.logic import handle_tenant_created
from pipeline.tenants.tiers import quota_for_tier

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores

    @app.agent(io.topic(TENANT_CREATED), concurrency=1)
    async def tenant_created(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, TENANT_CREATED, TenantCreated,
                lambda event: handle_tenant_created(event, stores, quota_for_tier, now()),
            )
