"""Periodic reconciliation of this worker's tenants.

* A command whose status has not moved for RECONCILE_STALE_AFTER_SECONDS and that is not running here
  (its worker died mid-way) is started again, under the same command id.
* Every ready resource is verified against its backend; one that drifted (deleted or changed behind our
  back) is reported ``drifted`` and re-applied.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from agents.backends import provisioners
from agents.executor import report, running, start
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.executor import ProvisioningResult, tenant_spec
from pipeline.isolation import guarded, isolated
from pipeline.provisioners.errors import ProvisioningError
from pipeline.tenants.logic import command_for
from pipeline.tenants.models import ResourceState, TenantState

logger = logging.getLogger(__name__)

#: Not finished: restarted when stale. DRIFTED included: a worker that died between reporting drift and the
#: repair would otherwise leave the resource drifted for good (it is neither ready nor restarted).
IN_FLIGHT = {
    ResourceState.PENDING, ResourceState.PROVISIONING, ResourceState.RETRYING, ResourceState.DELETING,
    ResourceState.DRIFTED,
}


@app.timer(interval=app.settings.reconcile_interval_seconds)
@guarded("reconcile")
async def reconcile() -> None:
    if not app.settings.executor_enabled:
        return
    stale_before = now() - timedelta(seconds=app.settings.reconcile_stale_after_seconds)
    checks = []
    for tenant_id, status in STORES.status.items():
        with isolated("reconcile", tenant_id):  # one tenant's bad state does not stop the others'
            tenant, quota = STORES.tenants.get(tenant_id), STORES.quotas.get(tenant_id)
            if tenant is None or quota is None or tenant.state is TenantState.DELETED:
                continue
            for entry in status.resources.values():
                if entry.command_id in running:
                    continue
                if entry.status in IN_FLIGHT and entry.updated_at < stale_before:
                    action = CommandAction.DELETE if entry.status is ResourceState.DELETING else CommandAction.CREATE
                    logger.info("restarting stale %s command of %s", entry.resource, tenant_id)
                    start(command_for(tenant, quota, entry, action, now()))
                elif entry.status is ResourceState.READY and tenant.state is TenantState.ACTIVE:
                    checks.append(command_for(tenant, quota, entry, CommandAction.CREATE, now()))
    await asyncio.gather(*(_verify(command) for command in checks))


async def _verify(command: ProvisioningCommand) -> None:
    with isolated("reconcile-verify", command.tenant_id):
        await _verify_one(command)


async def _verify_one(command: ProvisioningCommand) -> None:
    provisioner = provisioners().get(command.resource)
    if provisioner is None:
        return
    try:
        result = await provisioner.verify(tenant_spec(command))
    except ProvisioningError as exc:
        logger.warning("verify of %s for %s failed: %s", command.resource, command.tenant_id, exc)
        return
    if result.drifted:
        logger.warning("%s of %s drifted: %s", command.resource, command.tenant_id, "; ".join(result.details))
        await report(
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
        start(command)
