"""user-created-events: record the user under its tenant and emit the user's provisioning commands."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.topics import USER_CREATED
from pipeline.events.models import UserCreated
from pipeline.tenants.logic import handle_user_created


@app.agent(topic(USER_CREATED), concurrency=1)
async def user_created(stream: Any) -> None:
    async for message in events_acked_by_process(stream):
        await process(message, USER_CREATED, UserCreated, lambda event: handle_user_created(event, STORES, now()))
