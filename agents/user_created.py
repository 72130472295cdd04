"""user-created-events: record the user under its tenant and emit the user's provisioning commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import USER_CREATED
from pipeline.events.models import UserCreated
from pipeline.tenants.logic import handle_user_created

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores

    @app.agent(io.topic(USER_CREATED), concurrency=1)
    async def user_created(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, USER_CREATED, UserCreated,
                lambda event: handle_user_created(event, stores, now()),
            )
