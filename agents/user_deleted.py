"""user-deleted-events: mark the user deleting under its tenant and emit the user's revoke commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import events_acked_by_process, now
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import USER_DELETED
from pipeline.events.models import UserDeleted
from pipeline.tenants.logic import handle_user_deleted

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores

    @app.agent(io.topic(USER_DELETED), concurrency=1)
    async def user_deleted(stream: Any) -> None:
        async for message in events_acked_by_process(stream):
            await io.process(
                message, USER_DELETED, UserDeleted,
                lambda event: handle_user_deleted(event, stores, now()),
            )
