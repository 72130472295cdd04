"""provisioning-commands: run each command against its backend in a task of its own.

Every transition goes to ``provisioning-results`` (the status table is written by that topic's agent).
A command already finished (status ready/failed/deleted under the same command id) or already running
here is skipped, so redelivered commands do nothing twice. A command its tenant's state no longer wants
(deleted, re-created as a new generation, superseded, or unknown: history read by a new consumer group) is
dropped (``command_fence``), on arrival and again before each retry. Commands of events older than this
worker run in the replay lane (``pipeline/command_scheduler.py``): few at a time, verify before apply.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agents.backends import provisioners, retry_policy
from agents.runtime import dead_letter, handler_failed, topic
from agents.stores import STORES
from pipeline.app import app
from pipeline.command_scheduler import CommandScheduler, Sleep, is_replay
from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_COMMANDS, PROVISIONING_RESULTS
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.executor import execute, fenced
from pipeline.logs import log_context
from pipeline.tenants.logic import command_fence
from pipeline.tenants.models import ResourceState

logger = logging.getLogger(__name__)

FINISHED = {ResourceState.READY, ResourceState.FAILED, ResourceState.DELETED}
STARTED_AT = datetime.now(UTC)


async def report(result: ProvisioningResult) -> None:
    fut = await topic(PROVISIONING_RESULTS).send(
        key=result.tenant_id.encode(), value=result.model_dump_json().encode()
    )
    await fut


def already_done(command: ProvisioningCommand) -> bool:
    status = STORES.status.get(command.tenant_id)
    entry = status.resources.get(command.resource) if status else None
    return entry is not None and entry.command_id == command.command_id and entry.status in FINISHED


def fence(command: ProvisioningCommand) -> str | None:
    return command_fence(command, STORES)


async def _run(command: ProvisioningCommand, verify_first: bool, sleep: Sleep) -> ProvisioningResult:
    with log_context(tenant_id=command.tenant_id, command_id=command.command_id, event_id=command.cause_event_id):
        return await execute(command, provisioners(), report, retry_policy(), sleep=sleep, fence=fence,
                             verify_first=verify_first)


scheduler = CommandScheduler(
    _run,
    concurrency=app.settings.executor_concurrency,
    replay_concurrency=app.settings.executor_replay_concurrency,
    replay_backlog=app.settings.executor_replay_backlog,
)
running = scheduler.running


def start(command: ProvisioningCommand) -> bool:
    """Run ``command`` in the background unless it is already running on this worker; False if it is a replay
    that did not fit in the backlog (its status stays as it is, for the reconciler)."""
    return scheduler.start(command, is_replay(command, event_time(command), STARTED_AT))


def event_time(command: ProvisioningCommand) -> datetime | None:
    """When the event behind ``command`` happened, as the tables recorded it."""
    if command.action is CommandAction.CREATE_USER:
        user = STORES.users.get(f"{command.tenant_id}/{command.spec.get('user', {}).get('user_id')}")
        return user.created_at if user else None
    tenant = STORES.tenants.get(command.tenant_id)
    if tenant is None:
        return None
    return tenant.deleted_at if command.action is CommandAction.DELETE else tenant.created_at


@app.agent(topic(PROVISIONING_COMMANDS), concurrency=1)
async def executor(stream: Any) -> None:
    async for message in stream.events():
        try:
            command = ProvisioningCommand.model_validate_json(message.value)
        except ValidationError as exc:
            await dead_letter(PROVISIONING_COMMANDS, message.value, message.key, "schema", str(exc))
            continue
        try:
            if not app.settings.executor_enabled or already_done(command):
                continue
            reason = fence(command)
            if reason is not None:
                fenced(command, reason)
                continue
            start(command)
        except Exception as exc:
            await handler_failed(PROVISIONING_COMMANDS, message, exc)
