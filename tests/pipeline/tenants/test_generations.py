"""Generations, fencing and the reuse rule of a tenant id (pure logic over dict-backed tables)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_COMMANDS
from pipeline.events.models import CommandAction, ProvisioningCommand, TenantCreated, TenantDeleted, Tier
from pipeline.outputs import Emit, Refused
from pipeline.tenants.logic import (
    TenantStores,
    command_fence,
    command_for,
    handle_provisioning_result,
    handle_tenant_created,
    handle_tenant_deleted,
)
from pipeline.tenants.models import ProvisioningStatus, QuotaRecord, TenantRecord, TenantState, UserRecord
from pipeline.tenants.reconcile import RoundRobin, tenant_pass
from pipeline.typed_table import TypedTable
from tests.pipeline.tenants.conftest import NOW, quota_for_tier, tenant_created


def commands(emits: list[Emit]) -> list[ProvisioningCommand]:
    return [e.value for e in emits if e.topic == PROVISIONING_COMMANDS and isinstance(e.value, ProvisioningCommand)]


def deleted(event_id: str = "d1", purge: bool = False, minutes: int = 1) -> TenantDeleted:
    return TenantDeleted(event_id=event_id, tenant_id="acme", occurred_at=NOW + timedelta(minutes=minutes),
                         purge=purge)


def created_later(event_id: str, minutes: int) -> TenantCreated:
    return TenantCreated(event_id=event_id, tenant_id="acme", occurred_at=NOW + timedelta(minutes=minutes),
                         name="Acme again", tier=Tier.FREE)


def finish(stores: TenantStores, cmds: list[ProvisioningCommand]) -> None:
    """The executor's final results for ``cmds``, as the provisioning-results agent records them."""
    for c in cmds:
        status = "deleted" if c.action is CommandAction.DELETE else "ready"
        handle_provisioning_result(
            ProvisioningResult(command_id=c.command_id, tenant_id=c.tenant_id, resource=c.resource, action=c.action,
                               status=status, attempts=1, at=NOW),
            stores, NOW)


def test_a_delete_fences_every_create_command_of_the_tenant(stores: TenantStores) -> None:
    creates = commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW))
    assert all(command_fence(c, stores) is None for c in creates)
    deletes = commands(handle_tenant_deleted(deleted(), stores, NOW))
    assert all(command_fence(c, stores) is not None for c in creates)
    assert all(command_fence(c, stores) is None for c in deletes)


def test_the_create_event_replayed_after_the_delete_does_not_recreate_the_tenant(stores: TenantStores) -> None:
    finish(stores, commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)))
    finish(stores, commands(handle_tenant_deleted(deleted(purge=True), stores, NOW)))
    assert handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW) == []  # the same event again
    with pytest.raises(Refused) as refused:  # another create from before the delete, arriving late
        handle_tenant_created(tenant_created(event_id="evt-older"), stores, quota_for_tier, NOW)
    assert refused.value.reason == "stale-create"
    tenant = stores.tenants.get("acme")
    assert tenant is not None and tenant.state is TenantState.DELETED


def test_a_tenant_deleted_without_purge_keeps_its_id_until_a_purge(stores: TenantStores) -> None:
    finish(stores, commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)))
    plain = commands(handle_tenant_deleted(deleted(purge=False), stores, NOW))
    assert all(c.spec["purge"] is False for c in plain)
    finish(stores, plain)

    with pytest.raises(Refused) as refused:
        handle_tenant_created(created_later("evt-2", 5), stores, quota_for_tier, NOW)
    assert refused.value.reason == "tenant-id-retained" and "purge" in refused.value.detail

    purge = commands(handle_tenant_deleted(deleted("d2", purge=True, minutes=6), stores, NOW))
    assert len(purge) == 7 and all(c.action is CommandAction.DELETE and c.spec["purge"] is True for c in purge)
    with pytest.raises(Refused) as refused:  # not until the purge finished
        handle_tenant_created(created_later("evt-3", 7), stores, quota_for_tier, NOW)
    assert refused.value.reason == "tenant-deleting"
    finish(stores, purge)

    again = commands(handle_tenant_created(created_later("evt-4", 8), stores, quota_for_tier, NOW))
    tenant = stores.tenants.get("acme")
    assert tenant is not None and tenant.state is TenantState.ACTIVE and tenant.generation == 2
    assert tenant.tier is Tier.FREE and not tenant.purged and tenant.deleted_at is None
    assert {c.generation for c in again} == {2}
    assert all(command_fence(c, stores) is None for c in again)
    assert all(command_fence(c, stores) is not None for c in plain + purge)  # generation 1: fenced for good


def test_a_plain_delete_of_a_deleted_tenant_is_refused(stores: TenantStores) -> None:
    finish(stores, commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)))
    finish(stores, commands(handle_tenant_deleted(deleted(purge=True), stores, NOW)))
    for event in (deleted("d2"), deleted("d3", purge=True)):  # purged: nothing left to purge
        with pytest.raises(Refused):
            handle_tenant_deleted(event, stores, NOW)


def test_a_restarted_delete_keeps_its_purge_flag(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    handle_tenant_deleted(deleted(purge=True), stores, NOW)
    tenant, quota, status = stores.tenants.get("acme"), stores.quotas.get("acme"), stores.status.get("acme")
    assert tenant is not None and quota is not None and status is not None
    rerun = command_for(tenant, quota, status.resources["s3"], CommandAction.DELETE, NOW)
    assert rerun.spec["purge"] is True and rerun.command_id == status.resources["s3"].command_id


def test_commands_nobody_recorded_and_stale_quota_changes_are_fenced(stores: TenantStores) -> None:
    creates = commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW))
    history = creates[0].model_copy(update={"command_id": "from-an-earlier-deployment"})
    assert command_fence(history, stores) == "superseded by a later command for this resource"
    stranger = creates[0].model_copy(update={"tenant_id": "ghost"})
    assert command_fence(stranger, stores) is not None
    quota = creates[0].model_copy(update={"action": CommandAction.UPDATE_QUOTA, "spec": {
        **creates[0].spec, "quota": {"cpu_cores": 1, "memory_gib": 1, "gpus": 0, "storage_gib": 1}}})
    assert command_fence(quota, stores) == "a newer quota was set since"
    user = creates[0].model_copy(update={"action": CommandAction.CREATE_USER, "spec": {"user": {"user_id": "bob"}}})
    assert command_fence(user, stores) == "unknown user"


def test_the_reconciler_checks_a_recently_deleted_tenant_for_orphans(stores: TenantStores) -> None:
    finish(stores, commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)))
    finish(stores, commands(handle_tenant_deleted(deleted(purge=False), stores, NOW)))
    data_bearing = {"cassandra", "s3", "elasticsearch"}
    work = tenant_pass(stores, "acme", set(), NOW, NOW, NOW - timedelta(hours=1), data_bearing)
    assert {c.resource for c in work.orphan} == {"pulsar", "openproject", "ignite", "kubernetes"}
    assert all(c.action is CommandAction.DELETE and c.spec["purge"] is False for c in work.orphan)
    assert work.verify == [] and work.restart == []
    later = tenant_pass(stores, "acme", set(), NOW, NOW, NOW + timedelta(seconds=1), data_bearing)
    assert later.orphan == []


def test_a_stale_delete_reported_as_provisioning_is_restarted_as_a_delete(stores: TenantStores) -> None:
    # The executor reports every running command as `provisioning`, deletes included. A worker killed during
    # the delete leaves that entry stale: restarting it as a create re-created a purged tenant's keyspace.
    finish(stores, commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)))
    deletes = commands(handle_tenant_deleted(deleted(purge=True), stores, NOW))
    s3 = next(c for c in deletes if c.resource == "s3")
    handle_provisioning_result(
        ProvisioningResult(command_id=s3.command_id, tenant_id="acme", resource="s3", action=CommandAction.DELETE,
                           status="provisioning", attempts=1, at=NOW),
        stores, NOW)
    work = tenant_pass(stores, "acme", set(), NOW, NOW + timedelta(hours=1), NOW - timedelta(hours=1), set())
    restarted = {c.resource: c for c in work.restart}
    assert restarted["s3"].action is CommandAction.DELETE and restarted["s3"].spec["purge"] is True
    assert all(c.action is CommandAction.DELETE for c in work.restart)


def test_round_robin_hands_out_every_tenant_once_per_round() -> None:
    rr = RoundRobin()
    keys = [f"t{i:02}" for i in range(7)]
    batches = [rr.next_batch(keys, 3) for _ in range(3)]
    assert batches == [["t00", "t01", "t02"], ["t03", "t04", "t05"], ["t06"]]
    assert rr.next_batch(keys, 3) == ["t00", "t01", "t02"]


def fresh_stores() -> TenantStores:
    return TenantStores(
        tenants=TypedTable({}, TenantRecord),
        quotas=TypedTable({}, QuotaRecord),
        status=TypedTable({}, ProvisioningStatus),
        users=TypedTable({}, UserRecord),
    )


Step = tuple[str, bool]
STEPS = st.lists(st.tuples(st.sampled_from(["create", "delete", "finish"]), st.booleans()), max_size=25)


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_only_the_current_generation_of_an_active_tenant_can_create(steps: list[Step]) -> None:
    """Any sequence of creates, deletes (purge or not) and finished commands: a create command runs only while
    its tenant is active and it is the current one of its generation; an id comes back only after a purge."""
    stores = fresh_stores()
    emitted: list[ProvisioningCommand] = []
    in_flight: list[ProvisioningCommand] = []
    last_delete_purged: bool | None = None
    for minute, (step, purge) in enumerate(steps, start=1):
        before = stores.tenants.get("acme")
        try:
            if step == "create":
                cmds = commands(handle_tenant_created(created_later(f"c{minute}", minute), stores, quota_for_tier,
                                                      NOW))
                assert before is None or (before.state is TenantState.DELETED and last_delete_purged)
            elif step == "delete":
                cmds = commands(handle_tenant_deleted(deleted(f"d{minute}", purge, minute), stores, NOW))
                last_delete_purged = purge if cmds else last_delete_purged
            else:
                finish(stores, in_flight)
                in_flight, cmds = [], []
        except Refused:
            continue
        emitted += cmds
        in_flight += cmds
        tenant = stores.tenants.get("acme")
        for c in emitted:
            if c.action is CommandAction.CREATE and command_fence(c, stores) is None:
                assert tenant is not None and tenant.state is TenantState.ACTIVE
                assert c.generation == tenant.generation
