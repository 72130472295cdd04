"""What one reconciler pass does for one tenant: restart stale commands, verify ready resources, and look for
orphans (a resource of a deleted tenant that a late create re-created).

Pure: ``agents/reconciler.py`` walks the tenants a few at a time and carries out what this returns.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.tenants.logic import TenantStores, command_fence, command_for
from pipeline.tenants.models import ResourceState, TenantState

#: Not finished: restarted when stale. DRIFTED included: a worker that died between reporting drift and the
#: repair would otherwise leave the resource drifted for good (it is neither ready nor restarted).
IN_FLIGHT = {
    ResourceState.PENDING, ResourceState.PROVISIONING, ResourceState.RETRYING, ResourceState.WAITING,
    ResourceState.DELETING, ResourceState.DRIFTED,
}

@dataclass
class TenantPass:
    restart: list[ProvisioningCommand] = field(default_factory=list)
    verify: list[ProvisioningCommand] = field(default_factory=list)
    #: Resources of a recently deleted tenant to check for existence (a delete command carrying the purge flag).
    orphan: list[ProvisioningCommand] = field(default_factory=list)


def tenant_pass(
    stores: TenantStores,
    tenant_id: str,
    running: Collection[str],
    now: datetime,
    stale_before: datetime,
    orphans_since: datetime,
    data_bearing: Collection[str],
    switched_off: Collection[str] = (),
) -> TenantPass:
    """The work for ``tenant_id``: stale in-flight commands to restart (same ids), ready resources of an active
    tenant to verify, and, for a tenant deleted after ``orphans_since``, deleted resources that must be gone
    (all with purge; without purge only the ones that are not in ``data_bearing``).

    A resource ``skipped`` while its backend was switched off by configuration, and no longer in
    ``switched_off``, is restarted too: switching Kubernetes on provisions the namespaces it skipped. A backend in
    ``switched_off`` is neither verified nor checked for orphans (this worker must not talk to it)."""
    work = TenantPass()
    tenant, quota, status = stores.tenants.get(tenant_id), stores.quotas.get(tenant_id), stores.status.get(tenant_id)
    if tenant is None or quota is None or status is None:
        return work
    if tenant.state is TenantState.DELETED:
        if tenant.updated_at < orphans_since:
            return work
        for entry in status.resources.values():
            if entry.resource in switched_off:
                continue
            if entry.status is ResourceState.DELETED and (tenant.purged or entry.resource not in data_bearing):
                work.orphan.append(command_for(tenant, quota, entry, CommandAction.DELETE, now))
        return work
    for entry in status.resources.values():
        if entry.command_id in running:
            continue
        if entry.status in IN_FLIGHT and entry.updated_at < stale_before:
            # The executor reports a running delete as `provisioning` too: the tenant's state says which it was.
            deleting = entry.status is ResourceState.DELETING or tenant.state is TenantState.DELETING
            action = CommandAction.DELETE if deleting else CommandAction.CREATE
            work.restart.append(command_for(tenant, quota, entry, action, now))
        elif entry.status is ResourceState.READY and tenant.state is TenantState.ACTIVE \
                and entry.resource not in switched_off:
            work.verify.append(command_for(tenant, quota, entry, CommandAction.CREATE, now))
        elif entry.status is ResourceState.SKIPPED and entry.resource not in switched_off:
            action = CommandAction.DELETE if tenant.state is TenantState.DELETING else CommandAction.CREATE
            work.restart.append(command_for(tenant, quota, entry, action, now))
    return work


class RoundRobin:
    """Tenant ids handed out a batch per pass; a new round starts from the table's keys when one ends, so each
    pass costs the same however many tenants there are."""

    def __init__(self) -> None:
        self._left: list[str] = []

    def next_batch(self, keys: Collection[str], size: int) -> list[str]:
        if not self._left:
            self._left = sorted(keys, reverse=True)
        batch = self._left[-size:][::-1]
        del self._left[-size:]
        return batch


def verify_outdated(command: ProvisioningCommand, stores: TenantStores) -> str | None:
    """Why a drift found by verifying ``command`` must not be reported or repaired, else None.

    A verify runs for a while after its pass built ``command`` from the tables. If the tenant changed
    meanwhile (a quota update, a delete, a new incarnation, a newer command), the difference it found may be
    that change itself, and re-applying ``command`` would undo it (seen: a quota set to 12.5 put back to 8).
    The next pass verifies against the new state.
    """
    fenced = command_fence(command, stores)
    if fenced is not None:
        return fenced
    quota = stores.quotas.get(command.tenant_id)
    if quota is None or command.spec.get("quota") != quota.limits.model_dump():
        return "the quota changed while the verify ran"
    return None
