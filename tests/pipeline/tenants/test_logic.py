from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_COMMANDS, PROVISIONING_EVENTS
from pipeline.events.models import (
    CommandAction,
    ProvisioningCommand,
    ProvisioningStatusEvent,
    QuotaExceeded,
    QuotaResource,
    QuotaUpdateRequested,
    TenantDeleted,
    Tier,
    UserCreated,
)
from pipeline.outputs import Refused
from pipeline.tenants.logic import (
    TENANT_RESOURCES,
    USER_RESOURCES,
    TenantStores,
    handle_provisioning_result,
    handle_quota_exceeded,
    handle_quota_update,
    handle_tenant_created,
    handle_tenant_deleted,
    handle_user_created,
    start_provisioning,
)
from pipeline.tenants.models import ProvisioningStatus, ResourceState, ResourceStatus
from pipeline.tenants.reconcile import tenant_pass
from tests.pipeline.tenants.conftest import NOW, quota_for_tier, tenant_created


def commands(emits) -> list[ProvisioningCommand]:
    return [e.value for e in emits if e.topic == PROVISIONING_COMMANDS]


def test_tenant_created_records_tenant_quota_and_pending_status(stores: TenantStores) -> None:
    emits = handle_tenant_created(tenant_created(tier=Tier.ENTERPRISE), stores, quota_for_tier, NOW)

    tenant = stores.tenants.get("acme")
    assert tenant is not None and tenant.tier is Tier.ENTERPRISE and tenant.owner_user_id == "alice"
    quota = stores.quotas.get("acme")
    assert quota is not None and quota.limits == quota_for_tier(Tier.ENTERPRISE)
    status = stores.status.get("acme")
    assert status is not None
    assert {r: s.status for r, s in status.resources.items()} == dict.fromkeys(TENANT_RESOURCES, ResourceState.PENDING)
    cmds = commands(emits)
    assert [c.resource for c in cmds] == list(TENANT_RESOURCES)
    assert {c.action for c in cmds} == {CommandAction.CREATE}
    assert all(c.spec["tier"] == "enterprise" for c in cmds)
    assert len({c.command_id for c in cmds}) == len(cmds)
    assert all(status.resources[c.resource].command_id == c.command_id for c in cmds)


def test_tier_decides_the_quota(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created("a", "e1", Tier.FREE), stores, quota_for_tier, NOW)
    handle_tenant_created(tenant_created("b", "e2", Tier.ENTERPRISE), stores, quota_for_tier, NOW)
    free, enterprise = stores.quotas.get("a"), stores.quotas.get("b")
    assert free is not None and enterprise is not None
    assert enterprise.limits.cpu_cores > free.limits.cpu_cores


def test_same_event_twice_is_one_tenant_and_same_command_ids(stores: TenantStores) -> None:
    first = commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW))
    again = handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    assert len(list(stores.tenants.items())) == 1
    assert {c.command_id for c in commands(again)} <= {c.command_id for c in first}


def test_a_second_create_for_an_existing_tenant_is_refused(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    with pytest.raises(Refused) as refused:
        handle_tenant_created(tenant_created(event_id="evt-other"), stores, quota_for_tier, NOW)
    assert refused.value.reason == "tenant-exists"


def test_user_created_needs_a_known_tenant(stores: TenantStores) -> None:
    event = UserCreated(event_id="u1", tenant_id="ghost", occurred_at=NOW, user_id="bob", email="b@x.io", roles=[])
    with pytest.raises(Refused) as refused:
        handle_user_created(event, stores, NOW)
    assert refused.value.reason == "unknown-tenant"


def test_user_created_records_user_and_emits_user_commands(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    event = UserCreated(
        event_id="u1", tenant_id="acme", occurred_at=NOW, user_id="bob", email="b@x.io", roles=["tenant-viewer"]
    )
    cmds = commands(handle_user_created(event, stores, NOW))
    assert stores.users.get("acme/bob") is not None
    assert {c.resource for c in cmds} == {"kubernetes", "pulsar", "openproject"}
    assert all(c.action is CommandAction.CREATE_USER and c.spec["user"]["user_id"] == "bob" for c in cmds)
    other = event.model_copy(update={"event_id": "u2"})
    assert handle_user_created(other, stores, NOW) == []  # a second event for the same user changes nothing


def test_a_redelivered_user_created_event_sends_its_commands_again(stores: TenantStores) -> None:
    # Killed after the user reached the worker's local store but before its changelog record and its
    # commands reached Kafka: the redelivery must send them (the same ids), not find the user and stop.
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    event = UserCreated(
        event_id="u1", tenant_id="acme", occurred_at=NOW, user_id="bob", email="b@x.io", roles=["tenant-viewer"]
    )
    first = {c.command_id for c in commands(handle_user_created(event, stores, NOW))}
    again = {c.command_id for c in commands(handle_user_created(event, stores, NOW))}
    assert again == first and len(first) == len(USER_RESOURCES)


def test_quota_exceeded_marks_the_resource_and_emits_enforcement(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    exceeded = QuotaExceeded(
        event_id="q1", tenant_id="acme", occurred_at=NOW, resource=QuotaResource.STORAGE_GIB, used=120, limit=100
    )
    enforcement = handle_quota_exceeded(exceeded, stores, NOW)
    assert [e.topic for e in enforcement] == [PROVISIONING_EVENTS]
    assert isinstance(enforcement[0].value, ProvisioningStatusEvent)
    assert enforcement[0].value.kind == "quota-enforcement"
    assert "s3" in enforcement[0].value.detail["refused_backends"]
    quota = stores.quotas.get("acme")
    assert quota is not None and quota.over_quota[QuotaResource.STORAGE_GIB].used == 120


def test_refused_resources_get_a_reason_and_no_command(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    quota = stores.quotas.get("acme")
    assert quota is not None
    handle_quota_exceeded(
        QuotaExceeded(event_id="q1", tenant_id="acme", occurred_at=NOW, resource=QuotaResource.STORAGE_GIB,
                      used=150, limit=100),
        stores,
        NOW,
    )
    tenant = stores.tenants.get("acme")
    assert tenant is not None
    emits = start_provisioning(stores, tenant, "retry-1", CommandAction.CREATE, NOW)
    sent = {c.resource for c in commands(emits)}
    assert sent == {"kubernetes", "pulsar", "openproject"}
    status = stores.status.get("acme")
    assert status is not None
    s3 = status.resources["s3"]
    assert s3.status is ResourceState.REFUSED and s3.last_error and "storage_gib quota" in s3.last_error


def test_quota_update_clears_over_quota_it_lifts_and_updates_kubernetes(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    handle_quota_exceeded(
        QuotaExceeded(event_id="q1", tenant_id="acme", occurred_at=NOW, resource=QuotaResource.CPU_CORES,
                      used=9, limit=8),
        stores,
        NOW,
    )
    update = QuotaUpdateRequested(
        event_id="p1", tenant_id="acme", occurred_at=NOW, actor="admin",
        quota={"cpu_cores": 16, "memory_gib": 64, "gpus": 1, "storage_gib": 200},
    )
    cmds = commands(handle_quota_update(update, stores, NOW))
    quota = stores.quotas.get("acme")
    assert quota is not None and quota.limits.cpu_cores == 16 and quota.over_quota == {}
    assert [(c.resource, c.action) for c in cmds] == [("kubernetes", CommandAction.UPDATE_QUOTA)]
    assert cmds[0].spec["quota"]["cpu_cores"] == 16


def test_a_quota_update_lifting_a_mark_keeps_the_quota_and_announces_the_lift(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    handle_quota_exceeded(
        QuotaExceeded(event_id="q1", tenant_id="acme", occurred_at=NOW, resource=QuotaResource.GPUS, used=9,
                      limit=8),
        stores,
        NOW,
    )
    before = stores.quotas.get("acme")
    assert before is not None and QuotaResource.GPUS in before.over_quota
    lift = QuotaUpdateRequested(event_id="l1", tenant_id="acme", occurred_at=NOW, actor="root",
                                lift_over_quota=[QuotaResource.GPUS])
    emits = handle_quota_update(lift, stores, NOW)
    after = stores.quotas.get("acme")
    assert after is not None and after.over_quota == {} and after.limits == before.limits
    assert [e.topic for e in emits] == [PROVISIONING_EVENTS]  # no ResourceQuota change: the limits are the same
    assert handle_quota_update(lift, stores, NOW) == []  # redelivered: nothing more to lift


@pytest.mark.parametrize("fields", [{}, {"quota": {"gpus": 1}, "lift_over_quota": ["gpus"]},
                                    {"lift_over_quota": ["gpus"], "release_quarantine": "api"}])
def test_a_quota_update_carries_exactly_one_change(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="carries one of a quota, the over-quota marks"):
        QuotaUpdateRequested(event_id="u1", tenant_id="acme", occurred_at=NOW, actor="root", **fields)


def test_teardown_runs_in_reverse_order_and_carries_purge(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    emits = handle_tenant_deleted(TenantDeleted(event_id="d1", tenant_id="acme", occurred_at=NOW, purge=True),
                                  stores, NOW)
    cmds = commands(emits)
    assert [c.resource for c in cmds] == list(reversed(TENANT_RESOURCES))
    assert all(c.action is CommandAction.DELETE and c.spec["purge"] is True for c in cmds)


def test_a_redelivery_resends_the_commands_of_resources_still_pending(stores: TenantStores) -> None:
    first = {c.resource: c.command_id for c in commands(handle_tenant_created(tenant_created(), stores, quota_for_tier,
                                                                              NOW))}
    status = stores.status.get("acme")
    assert status is not None
    status.resources["cassandra"].status = ResourceState.READY
    stores.status.put("acme", status)

    again = commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW))

    assert {c.resource for c in again} == set(TENANT_RESOURCES) - {"cassandra"}
    assert all(first[c.resource] == c.command_id for c in again)


@pytest.mark.parametrize("lost", [("status",), ("quota",), ("status", "quota")])
def test_a_redelivery_after_a_kill_between_the_table_writes_sends_every_command_again(
        stores: TenantStores, lost: tuple[str, ...]) -> None:
    # The first delivery wrote the tenant's record, then the worker was killed before its quota and status
    # records reached their changelogs (and before its commands reached Kafka).
    first = {c.resource: c.command_id for c in commands(handle_tenant_created(tenant_created(), stores, quota_for_tier,
                                                                              NOW))}
    for name in lost:
        table = stores.status if name == "status" else stores.quotas
        table.delete("acme")

    again = commands(handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW))

    assert {c.resource: c.command_id for c in again} == first
    status, quota = stores.status.get("acme"), stores.quotas.get("acme")
    assert status is not None and set(status.resources) == set(TENANT_RESOURCES)
    assert quota is not None and quota.limits == quota_for_tier(Tier.STANDARD)


# -- a backend switched off by configuration (KUBERNETES_ENABLED=false) -----------------------------------------

SKIP_REASON = "Kubernetes disabled (KUBERNETES_ENABLED=false): ..."


def _finish(stores: TenantStores, action: CommandAction, done: str) -> list[ProvisioningStatusEvent]:
    """Every resource's command ends ``done``, kubernetes's ``skipped`` (as the executor reports a disabled
    backend); the status events of kubernetes."""
    status = stores.status.get("acme")
    assert status is not None
    events: list[ProvisioningStatusEvent] = []
    for resource, entry in list(status.resources.items()):
        skipped = resource == "kubernetes"
        emits = handle_provisioning_result(ProvisioningResult(
            command_id=entry.command_id, tenant_id="acme", resource=resource, action=action,
            status="skipped" if skipped else done, attempts=0 if skipped else 1,  # type: ignore[arg-type]
            detail={"reason": SKIP_REASON} if skipped else {}, at=NOW + timedelta(seconds=1),
        ), stores, NOW)
        events += [e.value for e in emits if e.topic == PROVISIONING_EVENTS and skipped]
    return events


def test_a_tenant_is_ready_and_deletable_with_a_skipped_resource(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    [event] = _finish(stores, CommandAction.CREATE, "ready")
    status = stores.status.get("acme")
    assert status is not None and status.overall == "ready"
    assert status.resources["kubernetes"].status is ResourceState.SKIPPED
    assert status.resources["kubernetes"].last_error is None
    assert (event.status, event.previous_status, event.detail) == ("skipped", "pending", {"reason": SKIP_REASON})

    handle_tenant_deleted(TenantDeleted(event_id="evt-del", tenant_id="acme", occurred_at=NOW + timedelta(seconds=2),
                                        purge=True), stores, NOW)
    status = stores.status.get("acme")
    assert status is not None and status.resources["kubernetes"].status is ResourceState.DELETING
    _finish(stores, CommandAction.DELETE, "deleted")
    record, status = stores.tenants.get("acme"), stores.status.get("acme")
    assert record is not None and record.state.value == "deleted"
    assert status is not None and status.overall == "deleted"


def test_a_skipped_resource_does_not_make_an_unfinished_tenant_ready() -> None:
    def overall(*states: ResourceState) -> str:
        resources = {f"r{i}": ResourceStatus(resource=f"r{i}", status=s, command_id="c", updated_at=NOW)
                     for i, s in enumerate(states)}
        return ProvisioningStatus(tenant_id="acme", resources=resources).overall

    assert overall(ResourceState.READY, ResourceState.SKIPPED) == "ready"
    assert overall(ResourceState.PENDING, ResourceState.SKIPPED) == "in-progress"
    assert overall(ResourceState.FAILED, ResourceState.SKIPPED) == "failed"
    assert overall(ResourceState.RETRYING, ResourceState.SKIPPED) == "retrying"
    assert overall(ResourceState.DELETED, ResourceState.SKIPPED) == "deleted"
    assert overall(ResourceState.DELETING, ResourceState.SKIPPED) == "in-progress"
    assert overall(ResourceState.READY, ResourceState.DELETED) == "in-progress"


def test_a_skipped_resource_is_provisioned_once_its_backend_is_switched_on(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    _finish(stores, CommandAction.CREATE, "ready")
    status = stores.status.get("acme")
    assert status is not None
    skipped_id = status.resources["kubernetes"].command_id
    an_hour_ago = NOW - timedelta(hours=1)

    still_off = tenant_pass(stores, "acme", (), NOW, an_hour_ago, an_hour_ago, (), {"kubernetes"})
    assert still_off.restart == [] and "kubernetes" not in {c.resource for c in still_off.verify}
    switched_on = tenant_pass(stores, "acme", (), NOW, an_hour_ago, an_hour_ago, ())
    [restart] = switched_on.restart
    assert (restart.resource, restart.action, restart.command_id) == ("kubernetes", CommandAction.CREATE, skipped_id)
    assert tenant_pass(stores, "acme", {skipped_id}, NOW, an_hour_ago, an_hour_ago, ()).restart == []  # running


def test_a_skipped_delete_is_run_again_once_the_backend_is_switched_on(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    handle_tenant_deleted(TenantDeleted(event_id="evt-del", tenant_id="acme", occurred_at=NOW + timedelta(seconds=2),
                                        purge=True), stores, NOW)
    status = stores.status.get("acme")
    assert status is not None
    entry = status.resources["kubernetes"]
    handle_provisioning_result(ProvisioningResult(
        command_id=entry.command_id, tenant_id="acme", resource="kubernetes", action=CommandAction.DELETE,
        status="skipped", attempts=0, detail={"reason": SKIP_REASON}, at=NOW + timedelta(seconds=3),
    ), stores, NOW)
    an_hour_ago = NOW - timedelta(hours=1)
    [restart] = tenant_pass(stores, "acme", (), NOW, an_hour_ago, an_hour_ago, ()).restart  # the others: not stale
    assert (restart.resource, restart.action, restart.spec["purge"]) == ("kubernetes", CommandAction.DELETE, True)


def test_a_switched_off_backend_is_neither_verified_nor_checked_for_orphans(stores: TenantStores) -> None:
    """Resources made while Kubernetes was on stay as they are, unverified, while it is off (no warning per pass)."""
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    status = stores.status.get("acme")
    assert status is not None
    for entry in status.resources.values():
        entry.status = ResourceState.READY
    stores.status.put("acme", status)
    an_hour_ago = NOW - timedelta(hours=1)
    enabled = tenant_pass(stores, "acme", (), NOW, an_hour_ago, an_hour_ago, ())
    assert {c.resource for c in enabled.verify} == set(TENANT_RESOURCES)
    work = tenant_pass(stores, "acme", (), NOW, an_hour_ago, an_hour_ago, (), {"kubernetes"})
    assert {c.resource for c in work.verify} == set(TENANT_RESOURCES) - {"kubernetes"} and work.restart == []

    handle_tenant_deleted(TenantDeleted(event_id="evt-del", tenant_id="acme", occurred_at=NOW + timedelta(seconds=2),
                                        purge=True), stores, NOW)
    status = stores.status.get("acme")
    assert status is not None
    for resource, entry in list(status.resources.items()):
        handle_provisioning_result(ProvisioningResult(
            command_id=entry.command_id, tenant_id="acme", resource=resource, action=CommandAction.DELETE,
            status="deleted", attempts=1, at=NOW + timedelta(seconds=3)), stores, NOW)
    assert {c.resource for c in tenant_pass(stores, "acme", (), NOW, an_hour_ago, an_hour_ago, ()).orphan} \
        == set(TENANT_RESOURCES)
    work = tenant_pass(stores, "acme", (), NOW, an_hour_ago, an_hour_ago, (), {"kubernetes"})
    assert {c.resource for c in work.orphan} == set(TENANT_RESOURCES) - {"kubernetes"}
