"""quota-exceeded-events: mark the resource over quota and emit an enforcement event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import QUOTA_EXCEEDED
from pipeline.events.models import QuotaExceeded
from pipeline.tenants.logic import handle_quota_exceeded

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores

    @app.agent(io.topic(QUOTA_EXCEEDED), concurrency=1)
    async def quota_exceeded(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, QUOTA_EXCEEDED, QuotaExceeded,
                lambda event: handle_quota_exceeded(event, stores, now()),
            )
