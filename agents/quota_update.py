"""quota-update-requests (from the REST API): replace a tenant's quota (then update its ResourceQuota), lift an
over-quota mark, or release a quarantined workload."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import QUOTA_UPDATES
from pipeline.events.models import QuotaUpdateRequested
from pipeline.tenants.anomaly import release_quarantine
from pipeline.tenants.logic import handle_quota_update

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores
    anomalies = deps.tables.anomalies

    @app.agent(io.topic(QUOTA_UPDATES), concurrency=1)
    async def quota_update(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, QUOTA_UPDATES, QuotaUpdateRequested,
                lambda event: release_quarantine(event, stores, anomalies, now()) if event.release_quarantine
                else handle_quota_update(event, stores, now()),
            )
