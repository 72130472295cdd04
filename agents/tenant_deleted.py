"""tenant-deleted-events: mark the tenant deleting and emit teardown commands in reverse order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import TENANT_DELETED
from pipeline.events.models import TenantDeleted
from pipeline.tenants.logic import handle_tenant_deleted

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores

    @app.agent(io.topic(TENANT_DELETED), concurrency=1)
    async def tenant_deleted(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, TENANT_DELETED, TenantDeleted,
                lambda event: handle_tenant_deleted(event, stores, now()),
            )
