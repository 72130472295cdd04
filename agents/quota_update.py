"""quota-update-requests (from the REST API): replace a tenant's quota, then update its ResourceQuota."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import QUOTA_UPDATES
from pipeline.events.models import QuotaUpdateRequested
from pipeline.tenants.logic import handle_quota_update

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores

    @app.agent(io.topic(QUOTA_UPDATES), concurrency=1)
    async def quota_update(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, QUOTA_UPDATES, QuotaUpdateRequested,
                lambda event: handle_quota_update(event, stores, now()),
            )
