"""provisioning-commands: run each command against its backend in a task of its own.

Every transition goes to ``provisioning-results`` (the status table is written by that topic's agent).
A command already finished (status ready/failed/deleted under the same command id) or already running
here is skipped, so redelivered commands do nothing twice. A command its tenant's state no longer wants
(deleted, re-created as a new generation, superseded, or unknown: history read by a new consumer group) is
dropped (``command_fence``; a quarantine released since, or a release quarantined again since:
``workload_fence``), on arrival and again before each retry. Commands of events older than this
worker run in the replay lane (``pipeline/command_scheduler.py``): few at a time, verify before apply.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agents.backends import Backends
from agents.runtime import AgentRuntime
from pipeline.app import ProvisioningApp
from pipeline.command_scheduler import CommandScheduler, Sleep, is_replay
from pipeline.config import Settings
from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_COMMANDS, PROVISIONING_RESULTS
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.executor import WORKLOAD_ACTIONS, execute, fenced
from pipeline.logs import log_context
from pipeline.tenants.anomaly import workload_fence
from pipeline.tenants.logic import USER_ACTIONS, TenantStores, command_fence, user_key
from pipeline.tenants.models import AnomalyLog, ResourceState, UserRecord
from pipeline.typed_table import TypedTable

if TYPE_CHECKING:
    from agents.deps import AgentDeps

logger = logging.getLogger(__name__)

FINISHED = {ResourceState.READY, ResourceState.FAILED, ResourceState.DELETED, ResourceState.SKIPPED}


class Executor:
    """The commands this worker runs: a scheduler of background tasks (normal and replay lanes), and what
    decides whether a command is still wanted. Shared by the executor agent and the reconciler."""

    def __init__(self, settings: Settings, stores: TenantStores, io: AgentRuntime, backends: Backends,
                 anomalies: TypedTable[AnomalyLog] | None = None) -> None:
        self.settings = settings
        #: The quarantined workloads, for the fence of ``quarantine``/``release_quarantine`` commands.
        self.anomalies = anomalies
        self.stores = stores
        self.io = io
        self.backends = backends
        self.started_at = datetime.now(UTC)
        self.scheduler = CommandScheduler(
            self._run,
            concurrency=settings.executor_concurrency,
            replay_concurrency=settings.executor_replay_concurrency,
            replay_backlog=settings.executor_replay_backlog,
        )
        self.running = self.scheduler.running

    async def report(self, result: ProvisioningResult) -> None:
        await self.io.send(PROVISIONING_RESULTS, result.tenant_id, result)

    def already_done(self, command: ProvisioningCommand) -> bool:
        if command.action in USER_ACTIONS:
            user = self._user(command)
            entry = user.resources.get(command.resource) if user else None
        else:
            status = self.stores.status.get(command.tenant_id)
            entry = status.resources.get(command.resource) if status else None
        return entry is not None and entry.command_id == command.command_id and entry.status in FINISHED

    def _user(self, command: ProvisioningCommand) -> UserRecord | None:
        raw = command.spec.get("user")
        user_id = raw.get("user_id") if isinstance(raw, dict) else None
        return self.stores.users.get(user_key(command.tenant_id, user_id)) if isinstance(user_id, str) else None

    def fence(self, command: ProvisioningCommand) -> str | None:
        reason = command_fence(command, self.stores)
        if reason is None and command.action in WORKLOAD_ACTIONS and self.anomalies is not None:
            reason = workload_fence(command, self.anomalies.get(command.tenant_id))
        return reason

    async def _run(self, command: ProvisioningCommand, verify_first: bool, sleep: Sleep) -> ProvisioningResult:
        with log_context(tenant_id=command.tenant_id, command_id=command.command_id,
                         event_id=command.cause_event_id):
            return await execute(command, self.backends.provisioners(), self.report, self.backends.retry_policy(),
                                 sleep=sleep, fence=self.fence, verify_first=verify_first)

    def start(self, command: ProvisioningCommand) -> bool:
        """Run ``command`` in the background unless it is already running on this worker; False if it is a
        replay that did not fit in the backlog (its status stays as it is, for the reconciler)."""
        return self.scheduler.start(command, is_replay(command, self.event_time(command), self.started_at))

    def event_time(self, command: ProvisioningCommand) -> datetime | None:
        """When the event behind ``command`` happened, as the tables recorded it."""
        if command.action in USER_ACTIONS:
            user = self._user(command)
            if user is None:
                return None
            return user.deleted_at if command.action is CommandAction.DELETE_USER else user.created_at
        tenant = self.stores.tenants.get(command.tenant_id)
        if tenant is None:
            return None
        return tenant.deleted_at if command.action is CommandAction.DELETE else tenant.created_at


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, run = deps.io, deps.executor

    @app.agent(io.topic(PROVISIONING_COMMANDS), concurrency=1)
    async def executor(stream: Any) -> None:
        async for message in stream.events():
            try:
                command = ProvisioningCommand.model_validate_json(message.value)
            except ValidationError as exc:
                await io.dead_letter(PROVISIONING_COMMANDS, message.value, message.key, "schema", str(exc))
                continue
            try:
                if not deps.settings.executor_enabled or run.already_done(command):
                    continue
                reason = run.fence(command)
                if reason is not None:
                    fenced(command, reason)
                    continue
                run.start(command)
            except Exception as exc:
                await io.handler_failed(PROVISIONING_COMMANDS, message, exc)
