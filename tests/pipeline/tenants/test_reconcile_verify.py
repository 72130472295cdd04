"""A verify whose tenant changed while it ran does not report drift or repair with the old state (a quota
update was put back by a repair built before it)."""

from __future__ import annotations

from datetime import timedelta

from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.logic import TenantStores, handle_tenant_created, set_quota
from pipeline.tenants.models import ResourceState, TenantState
from pipeline.tenants.reconcile import tenant_pass, verify_outdated
from tests.pipeline.tenants.conftest import NOW, quota_for_tier, tenant_created


def ready_tenant(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    status = stores.status.get("acme")
    assert status is not None
    for entry in status.resources.values():
        entry.status = ResourceState.READY
    stores.status.put("acme", status)


def verify_command(stores: TenantStores) -> ProvisioningCommand:
    work = tenant_pass(stores, "acme", (), NOW, NOW - timedelta(hours=1), NOW - timedelta(hours=1), ())
    [command] = [c for c in work.verify if c.resource == "kubernetes"]
    assert command.action is CommandAction.CREATE
    return command


def test_an_unchanged_tenant_lets_the_verify_report_and_repair(stores: TenantStores) -> None:
    ready_tenant(stores)
    assert verify_outdated(verify_command(stores), stores) is None


def test_a_quota_set_while_the_verify_ran_makes_it_wait_for_the_next_pass(stores: TenantStores) -> None:
    ready_tenant(stores)
    command = verify_command(stores)
    quota = stores.quotas.get("acme")
    assert quota is not None
    set_quota(stores, "acme", Quota.model_validate({**quota.limits.model_dump(), "cpu_cores": 12.5}), "admin", NOW)
    assert verify_outdated(command, stores) == "the quota changed while the verify ran"
    assert verify_outdated(verify_command(stores), stores) is None  # the next pass's command is current


def test_a_tenant_deleted_while_the_verify_ran_is_not_repaired(stores: TenantStores) -> None:
    ready_tenant(stores)
    command = verify_command(stores)
    tenant = stores.tenants.get("acme")
    assert tenant is not None
    stores.tenants.put("acme", tenant.model_copy(update={"state": TenantState.DELETING}))
    assert verify_outdated(command, stores) is not None
