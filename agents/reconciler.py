"""Periodic reconciliation of this worker's tenants, a batch of tenants per pass (RECONCILE_BATCH_TENANTS).

* A command whose status has not moved for RECONCILE_STALE_AFTER_SECONDS and that is not running here
  (its worker died mid-way, or the replay backlog was full) is started again, under the same command id.
* Every ready resource is verified against its backend; one that drifted (deleted or changed behind our
  back) is reported ``drifted`` and re-applied.
* For RECONCILE_ORPHAN_WINDOW_SECONDS after a tenant was deleted, its deleted resources are checked: one that
  exists again (a create that reached the backend after the delete, e.g. from another worker) is deleted.

The timer body only picks the batch and starts tasks: verifies run in the background, a few at a time, and a
pass whose predecessor's verifies are still running starts none (the next pass picks the tenants up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agents.runtime import now
from pipeline.app import ProvisioningApp
from pipeline.contract.records import ProvisioningResult
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.executor import tenant_spec
from pipeline.isolation import guarded, isolated
from pipeline.metrics import ORPHANS_REMOVED
from pipeline.provisioners.disabled import DisabledProvisioner
from pipeline.provisioners.errors import ProvisioningError
from pipeline.tenants.models import TenantState
from pipeline.tenants.reconcile import RoundRobin, tenant_pass, verify_outdated

if TYPE_CHECKING:
    from agents.deps import AgentDeps

logger = logging.getLogger(__name__)


class Reconciler:
    """One pass per timer tick over the next batch of this worker's tenants; verifies run in the background."""

    def __init__(self, deps: AgentDeps) -> None:
        self.settings = deps.settings
        self.stores = deps.stores
        self.backends = deps.backends
        self.executor = deps.executor
        self._tenants = RoundRobin()
        self._checks: set[asyncio.Task[None]] = set()
        self._check_slots = asyncio.Semaphore(deps.settings.reconcile_verify_concurrency)

    async def reconcile(self) -> None:
        if not self.settings.executor_enabled:
            return
        settings, at = self.settings, now()
        stale_before = at - timedelta(seconds=settings.reconcile_stale_after_seconds)
        orphans_since = at - timedelta(seconds=settings.reconcile_orphan_window_seconds)
        data_bearing = {name for name, p in self.backends.provisioners().items() if p.data_bearing}
        switched_off = {name for name, p in self.backends.provisioners().items() if isinstance(p, DisabledProvisioner)}
        checking = bool(self._checks)
        batch = self._tenants.next_batch(self.stores.status.keys(), settings.reconcile_batch_tenants)
        verifies = 0
        for tenant_id in batch:
            with isolated("reconcile", tenant_id):  # one tenant's bad state does not stop the others'
                work = tenant_pass(self.stores, tenant_id, self.executor.running, at, stale_before, orphans_since,
                                   data_bearing, switched_off)
                for command in work.restart:
                    logger.info("restarting stale %s command of %s", command.resource, tenant_id)
                    self.executor.start(command)
                if checking:
                    continue
                for command in work.verify:
                    self._spawn(self._verify(command))
                    verifies += 1
                for command in work.orphan:
                    self._spawn(self._remove_orphan(command))
        if verifies:
            # A pass starts verifies only once the previous pass's have finished: one line per completed round.
            logger.info("reconcile pass: verifying %d ready resources of %d tenants", verifies, len(batch))

    def _spawn(self, check: Coroutine[Any, Any, None]) -> None:
        async def bounded() -> None:
            async with self._check_slots:
                await check

        task = asyncio.create_task(bounded())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _verify(self, command: ProvisioningCommand) -> None:
        with isolated("reconcile-verify", command.tenant_id):
            await self._verify_one(command)

    async def _verify_one(self, command: ProvisioningCommand) -> None:
        provisioner = self.backends.provisioners().get(command.resource)
        if provisioner is None:
            return
        try:
            result = await provisioner.verify(tenant_spec(command))
        except ProvisioningError as exc:
            logger.warning("verify of %s for %s failed: %s", command.resource, command.tenant_id, exc)
            return
        if result.drifted and (outdated := verify_outdated(command, self.stores)) is not None:
            logger.info("drift of %s for %s left to the next pass: %s", command.resource, command.tenant_id, outdated)
            return
        if result.drifted:
            logger.warning("%s of %s drifted: %s", command.resource, command.tenant_id, "; ".join(result.details))
            await self.executor.report(
                ProvisioningResult(
                    command_id=command.command_id,
                    tenant_id=command.tenant_id,
                    resource=command.resource,
                    action=CommandAction.CREATE,
                    status="drifted",
                    attempts=0,
                    error="; ".join(result.details),
                    at=now(),
                )
            )
            self.executor.start(command)

    async def _remove_orphan(self, command: ProvisioningCommand) -> None:
        with isolated("reconcile-orphans", command.tenant_id):
            await self._remove_orphan_one(command)

    async def _remove_orphan_one(self, command: ProvisioningCommand) -> None:
        provisioner = self.backends.provisioners().get(command.resource)
        if provisioner is None:
            return
        spec = tenant_spec(command)
        try:
            if not (await provisioner.verify(spec)).exists:
                return
            tenant = self.stores.tenants.get(command.tenant_id)
            if tenant is None or tenant.state is not TenantState.DELETED or tenant.generation != command.generation:
                return  # re-created meanwhile: the resource is the new incarnation's
            deleted = await provisioner.delete(spec, purge=bool(command.spec.get("purge")))
        except ProvisioningError as exc:
            logger.warning("orphan check of %s for %s failed: %s", command.resource, command.tenant_id, exc)
            return
        if deleted.deleted:
            ORPHANS_REMOVED.labels(command.resource).inc()
            logger.warning("removed %s of deleted tenant %s, re-created after its delete: %s", command.resource,
                           command.tenant_id, ", ".join(deleted.deleted))


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    reconciler = Reconciler(deps)

    @app.timer(interval=deps.settings.reconcile_interval_seconds)
    @guarded("reconcile")
    async def reconcile() -> None:
        await reconciler.reconcile()
