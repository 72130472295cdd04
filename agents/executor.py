"""provisioning-commands: run each command against its backend in a task of its own.

Every transition goes to ``provisioning-results`` (the status table is written by that topic's agent).
A command already finished (status ready/failed/deleted under the same command id) or already running
here is skipped, so redelivered commands do nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from agents.backends import provisioners, retry_policy
from agents.runtime import dead_letter, handler_failed, topic
from agents.stores import STORES
from pipeline.app import app
from pipeline.events.models import ProvisioningCommand
from pipeline.executor import ProvisioningResult, execute
from pipeline.outputs import PROVISIONING_COMMANDS
from pipeline.tenants.models import ResourceState
from pipeline.topics import PROVISIONING_RESULTS

logger = logging.getLogger(__name__)

FINISHED = {ResourceState.READY, ResourceState.FAILED, ResourceState.DELETED}
running: dict[str, asyncio.Task[ProvisioningResult]] = {}
_slots = asyncio.Semaphore(app.settings.executor_concurrency)


async def report(result: ProvisioningResult) -> None:
    fut = await topic(PROVISIONING_RESULTS).send(
        key=result.tenant_id.encode(), value=result.model_dump_json().encode()
    )
    await fut


def already_done(command: ProvisioningCommand) -> bool:
    status = STORES.status.get(command.tenant_id)
    entry = status.resources.get(command.resource) if status else None
    return entry is not None and entry.command_id == command.command_id and entry.status in FINISHED


async def _run(command: ProvisioningCommand) -> ProvisioningResult:
    async with _slots:
        return await execute(command, provisioners(), report, retry_policy())


def start(command: ProvisioningCommand) -> None:
    """Run ``command`` in the background unless it is already running on this worker."""
    if command.command_id in running:
        return
    task = asyncio.create_task(_run(command), name=f"provision-{command.resource}-{command.tenant_id}")
    running[command.command_id] = task
    task.add_done_callback(lambda _: running.pop(command.command_id, None))


@app.agent(topic(PROVISIONING_COMMANDS), concurrency=1)
async def executor(stream: Any) -> None:
    async for message in stream.events():
        try:
            command = ProvisioningCommand.model_validate_json(message.value)
        except ValidationError as exc:
            await dead_letter(PROVISIONING_COMMANDS, message.value, message.key, "schema", str(exc))
            continue
        try:
            if app.settings.executor_enabled and not already_done(command):
                start(command)
        except Exception as exc:
            await handler_failed(PROVISIONING_COMMANDS, message, exc)
