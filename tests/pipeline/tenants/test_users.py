"""Users of a tenant: user-created grants, user-deleted revokes, per-resource status from the commands' results,
and the fence that keeps a grant and a revoke of the same user from undoing each other."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_COMMANDS
from pipeline.events.models import CommandAction, ProvisioningCommand, TenantDeleted, UserCreated, UserDeleted
from pipeline.executor import user_grant
from pipeline.outputs import Emit, Refused
from pipeline.provisioners.base import UserGrant, UserRole, effective_role
from pipeline.tenants.logic import (
    USER_RESOURCES,
    TenantStores,
    command_fence,
    handle_provisioning_result,
    handle_tenant_created,
    handle_tenant_deleted,
    handle_user_created,
    handle_user_deleted,
)
from pipeline.tenants.models import ResourceState, UserState
from tests.pipeline.tenants.conftest import NOW, quota_for_tier, tenant_created

LATER = NOW + timedelta(minutes=5)


def commands(emits: list[Emit]) -> list[ProvisioningCommand]:
    return [e.value for e in emits if e.topic == PROVISIONING_COMMANDS]


def created(event_id: str = "u1", user_id: str = "bob", roles: list[str] | None = None,
            at: object = NOW) -> UserCreated:
    return UserCreated(event_id=event_id, tenant_id="acme", occurred_at=at, user_id=user_id, email="b@x.io",
                       roles=["editor"] if roles is None else roles)


def deleted(event_id: str = "d1", user_id: str = "bob", at: object = LATER) -> UserDeleted:
    return UserDeleted(event_id=event_id, tenant_id="acme", occurred_at=at, user_id=user_id)


def result(command: ProvisioningCommand, status: str, error: str | None = None) -> ProvisioningResult:
    return ProvisioningResult(command_id=command.command_id, tenant_id=command.tenant_id, resource=command.resource,
                              action=command.action, status=status, attempts=1, error=error, at=LATER,  # type: ignore[arg-type]
                              user_id=command.spec["user"]["user_id"])


@pytest.fixture
def tenant(stores: TenantStores) -> TenantStores:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    return stores


# -- the value type ------------------------------------------------------------------------------------------


@given(st.lists(st.sampled_from(["viewer", "editor", "admin", "Admin", " EDITOR ", "tenant-viewer", "owner", ""]),
                max_size=6))
def test_the_effective_role_is_the_highest_known_role_and_viewer_without_one(roles: list[str]) -> None:
    known = {r.strip().lower() for r in roles} & {"viewer", "editor", "admin"}
    expected = next((UserRole(r) for r in ("admin", "editor", "viewer") if r in known), UserRole.VIEWER)
    assert effective_role(roles) is expected


@given(st.text(min_size=0, max_size=140))
def test_a_grant_takes_only_safe_user_ids_of_1_to_128_characters(user_id: str) -> None:
    safe = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}", user_id) is not None
    try:
        grant = UserGrant(user_id=user_id, role=UserRole.VIEWER)
    except ValidationError:
        assert not safe
    else:
        assert safe and grant.user_id == user_id


@pytest.mark.parametrize("user_id", ["a" * 128, "a@b.io", "x:y+z.w-v_1"])
def test_boundary_user_ids_are_accepted(user_id: str) -> None:
    assert UserGrant(user_id=user_id, role=UserRole.ADMIN).user_id == user_id


@pytest.mark.parametrize("user_id", ["a" * 129, "", "-a", "a/b", "a b", "ä", "a\n"])
def test_unsafe_user_ids_are_refused_by_the_event(user_id: str) -> None:
    with pytest.raises(ValidationError):
        created(user_id=user_id)


# -- user-created ----------------------------------------------------------------------------------------


def test_user_created_records_pending_statuses_and_sends_one_grant_per_resource(tenant: TenantStores) -> None:
    cmds = commands(handle_user_created(created(roles=["admin", "viewer"]), tenant, NOW))
    assert [c.resource for c in cmds] == list(USER_RESOURCES)
    assert all(c.action is CommandAction.CREATE_USER for c in cmds)
    assert all(user_grant(c) == UserGrant(user_id="bob", role=UserRole.ADMIN, email="b@x.io") for c in cmds)
    user = tenant.users.get("acme/bob")
    assert user is not None and user.state is UserState.ACTIVE
    assert {r: (s.status, s.command_id) for r, s in user.resources.items()} == {
        c.resource: (ResourceState.PENDING, c.command_id) for c in cmds
    }
    assert all(command_fence(c, tenant) is None for c in cmds)


def test_results_of_grants_update_the_users_status(tenant: TenantStores) -> None:
    cmds = commands(handle_user_created(created(), tenant, NOW))
    handle_provisioning_result(result(cmds[0], "ready"), tenant, LATER)
    handle_provisioning_result(result(cmds[1], "failed", "HTTP 403"), tenant, LATER)
    user = tenant.users.get("acme/bob")
    assert user is not None
    assert user.resources[cmds[0].resource].status is ResourceState.READY
    assert user.resources[cmds[1].resource].status is ResourceState.FAILED
    assert user.resources[cmds[1].resource].last_error == "HTTP 403"
    assert user.overall == "failed"
    status = tenant.status.get("acme")
    assert status is not None and all(s.status is ResourceState.PENDING for s in status.resources.values())


def test_a_result_of_a_superseded_or_fenced_user_command_changes_nothing(tenant: TenantStores) -> None:
    cmds = commands(handle_user_created(created(), tenant, NOW))
    old = cmds[0].model_copy(update={"command_id": "older"})
    assert handle_provisioning_result(result(old, "ready"), tenant, LATER) == []
    assert handle_provisioning_result(result(cmds[0], "fenced"), tenant, LATER) == []
    user = tenant.users.get("acme/bob")
    assert user is not None and user.resources[cmds[0].resource].status is ResourceState.PENDING


def test_a_redelivered_user_created_sends_the_same_commands_and_keeps_statuses(tenant: TenantStores) -> None:
    first = commands(handle_user_created(created(), tenant, NOW))
    handle_provisioning_result(result(first[0], "ready"), tenant, LATER)
    again = commands(handle_user_created(created(), tenant, LATER))
    assert [c.command_id for c in again] == [c.command_id for c in first]
    user = tenant.users.get("acme/bob")
    assert user is not None and user.resources[first[0].resource].status is ResourceState.READY


# -- user-deleted ----------------------------------------------------------------------------------------


def test_user_deleted_marks_deleting_fences_the_grants_and_sends_revokes(tenant: TenantStores) -> None:
    grants = commands(handle_user_created(created(), tenant, NOW))
    revokes = commands(handle_user_deleted(deleted(), tenant, LATER))
    assert [c.resource for c in revokes] == list(USER_RESOURCES)
    assert all(c.action is CommandAction.DELETE_USER and c.spec["user"]["user_id"] == "bob" for c in revokes)
    assert {c.command_id for c in revokes}.isdisjoint(c.command_id for c in grants)
    user = tenant.users.get("acme/bob")
    assert user is not None and user.state is UserState.DELETING and user.delete_event_id == "d1"
    assert all(command_fence(c, tenant) is None for c in revokes)
    assert all(command_fence(c, tenant) is not None for c in grants)  # a grant still retrying stops


def test_the_user_is_deleted_once_every_revoke_reported_deleted(tenant: TenantStores) -> None:
    handle_user_created(created(), tenant, NOW)
    revokes = commands(handle_user_deleted(deleted(), tenant, LATER))
    handle_provisioning_result(result(revokes[0], "deleted"), tenant, LATER)
    user = tenant.users.get("acme/bob")
    assert user is not None and user.state is UserState.DELETING
    for command in revokes[1:]:
        handle_provisioning_result(result(command, "deleted"), tenant, LATER)
    user = tenant.users.get("acme/bob")
    assert user is not None and user.state is UserState.DELETED and user.overall == "deleted"


def test_a_redelivered_user_deleted_sends_the_same_revokes_until_done_then_nothing(tenant: TenantStores) -> None:
    handle_user_created(created(), tenant, NOW)
    first = commands(handle_user_deleted(deleted(), tenant, LATER))
    again = commands(handle_user_deleted(deleted(), tenant, LATER))
    assert [c.command_id for c in again] == [c.command_id for c in first]
    for command in first:
        handle_provisioning_result(result(command, "deleted"), tenant, LATER)
    assert handle_user_deleted(deleted(), tenant, LATER) == []


def test_another_delete_of_a_deleting_user_sends_nothing(tenant: TenantStores) -> None:
    handle_user_created(created(), tenant, NOW)
    handle_user_deleted(deleted(), tenant, LATER)
    assert handle_user_deleted(deleted(event_id="d2"), tenant, LATER) == []


@pytest.mark.parametrize("user_id", ["nobody", "bob"])
def test_an_unknown_or_deleted_user_is_refused_with_a_reason(tenant: TenantStores, user_id: str) -> None:
    handle_user_created(created(), tenant, NOW)
    for command in commands(handle_user_deleted(deleted(), tenant, LATER)):
        handle_provisioning_result(result(command, "deleted"), tenant, LATER)
    with pytest.raises(Refused) as refused:
        handle_user_deleted(deleted(event_id="d9", user_id=user_id), tenant, LATER)
    assert refused.value.reason == "unknown-user"


def test_a_delete_from_before_the_create_is_refused_as_stale(tenant: TenantStores) -> None:
    handle_user_created(created(), tenant, NOW)
    with pytest.raises(Refused) as refused:
        handle_user_deleted(deleted(at=NOW - timedelta(seconds=1)), tenant, LATER)
    assert refused.value.reason == "stale-delete"


def test_a_deleted_user_is_created_again_by_a_later_event_and_the_revokes_are_fenced(tenant: TenantStores) -> None:
    handle_user_created(created(), tenant, NOW)
    revokes = commands(handle_user_deleted(deleted(), tenant, LATER))
    with pytest.raises(Refused):  # a create from before the delete does not bring the user back
        handle_user_created(created(event_id="u0", at=NOW + timedelta(minutes=1)), tenant, LATER)
    grants = commands(handle_user_created(created(event_id="u2", at=LATER + timedelta(minutes=1)), tenant, LATER))
    assert len(grants) == len(USER_RESOURCES)
    user = tenant.users.get("acme/bob")
    assert user is not None and user.state is UserState.ACTIVE and user.source_event_id == "u2"
    assert all(command_fence(c, tenant) is not None for c in revokes)
    assert all(command_fence(c, tenant) is None for c in grants)


def test_a_tenant_being_deleted_needs_no_per_user_revokes(tenant: TenantStores) -> None:
    grants = commands(handle_user_created(created(), tenant, NOW))
    handle_tenant_deleted(TenantDeleted(event_id="t-del", tenant_id="acme", occurred_at=LATER), tenant, LATER)
    assert handle_user_deleted(deleted(), tenant, LATER) == []
    assert all(command_fence(c, tenant) is not None for c in grants)


def test_user_deleted_of_an_unknown_tenant_is_refused(stores: TenantStores) -> None:
    with pytest.raises(Refused) as refused:
        handle_user_deleted(deleted(), stores, LATER)
    assert refused.value.reason == "unknown-tenant"


def test_a_users_skipped_grant_and_revoke_finish_the_user(tenant: TenantStores) -> None:
    """A backend switched off by configuration (KUBERNETES_ENABLED=false) reports ``skipped``: the user is
    granted everywhere else, and deleted once the others are revoked."""
    def finish(cmds: list[ProvisioningCommand], done: str) -> None:
        for command in cmds:
            outcome = result(command, "skipped" if command.resource == "kubernetes" else done)
            handle_provisioning_result(outcome.model_copy(update={"detail": {"reason": "off"}}), tenant, LATER)

    finish(commands(handle_user_created(created(), tenant, LATER)), "ready")
    user = tenant.users.get("acme/bob")
    assert user is not None and user.overall == "ready"
    assert user.resources["kubernetes"].status is ResourceState.SKIPPED
    finish(commands(handle_user_deleted(deleted(), tenant, LATER)), "deleted")
    user = tenant.users.get("acme/bob")
    assert user is not None and user.state is UserState.DELETED
