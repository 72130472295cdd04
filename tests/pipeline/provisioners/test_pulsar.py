"""The Pulsar provisioner against the local Pulsar standalone, checked through Pulsar's admin REST API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pulsar
import pytest

from pipeline.provisioners.base import TenantSpec, UserGrant, UserRole
from pipeline.provisioners.errors import TransientError
from pipeline.provisioners.pulsar import PulsarProvisioner
from pipeline.provisioners.tiers import TiersConfig
from tests.pipeline.provisioners.conftest import (
    applied,
    assert_deletes_only_this_tenant,
    deleted_after,
    provisioner_fixture,
)

pytestmark = pytest.mark.integration


provisioner = provisioner_fixture(PulsarProvisioner)


class Admin:
    def __init__(self, exports: dict[str, str]) -> None:
        self.url = exports["PULSAR_ADMIN_URL"].rstrip("/") + "/admin/v2"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.request(method, self.url + path, json=body) as r:
            text = await r.text()
            try:
                return r.status, await r.json(content_type=None) if text else None
            except ValueError:
                return r.status, text


@pytest.fixture
def admin(pulsar_service: dict[str, str]) -> Admin:
    return Admin(pulsar_service)


@pytest.mark.parametrize("tier", ["free", "enterprise"])
async def test_apply_creates_tenant_and_namespace_with_the_tier_policies(
    provisioner: PulsarProvisioner, admin: Admin, make_tenant: Callable[..., TenantSpec], tiers: TiersConfig,
    tier: str,
) -> None:
    tenant = make_tenant(tier)
    names = tenant.names()
    config = tiers.tier(tier).pulsar
    async with deleted_after(provisioner, tenant):
        plan = await provisioner.apply(tenant)
        status, clusters = await admin.call("GET", "/clusters")
        assert status == 200
        status, info = await admin.call("GET", f"/tenants/{names.pulsar_tenant}")
        assert status == 200 and info["allowedClusters"] == sorted(clusters) == plan.settings["allowed_clusters"]
        _, namespaces = await admin.call("GET", f"/namespaces/{names.pulsar_tenant}")
        assert namespaces == [names.pulsar_namespace]
        _, retention = await admin.call("GET", f"/namespaces/{names.pulsar_namespace}/retention")
        assert retention == {"retentionTimeInMinutes": config.retention_minutes,
                             "retentionSizeInMB": config.retention_size_mb}
        _, backlog = await admin.call("GET", f"/namespaces/{names.pulsar_namespace}/backlogQuotaMap")
        quota = backlog["destination_storage"]
        assert quota["limitSize"] == config.backlog_quota.limit_size_mb * 1024 * 1024
        assert quota["policy"] == config.backlog_quota.policy
        _, ttl = await admin.call("GET", f"/namespaces/{names.pulsar_namespace}/messageTTL")
        assert ttl == config.message_ttl_seconds
        assert (await provisioner.verify(tenant)).ok


async def test_apply_twice_and_tier_changes_converge(
    provisioner: PulsarProvisioner, admin: Admin, make_tenant: Callable[..., TenantSpec], tiers: TiersConfig
) -> None:
    tenant = make_tenant("enterprise")
    names = tenant.names()
    async with deleted_after(provisioner, tenant):
        first = await provisioner.apply(tenant)
        assert await provisioner.apply(tenant) == first
        # Down to free: retention shrinks below the old backlog quota, so the order of the calls matters.
        downgraded = tenant.model_copy(update={"tier": "free"})
        await provisioner.apply(downgraded)
        assert (await provisioner.verify(downgraded)).ok
        _, retention = await admin.call("GET", f"/namespaces/{names.pulsar_namespace}/retention")
        assert retention["retentionSizeInMB"] == tiers.tier("free").pulsar.retention_size_mb
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok


async def test_verify_detects_drift_and_apply_repairs_it(
    provisioner: PulsarProvisioner, admin: Admin, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("standard")
    names = tenant.names()
    async with applied(provisioner, tenant):
        status, _ = await admin.call("POST", f"/namespaces/{names.pulsar_namespace}/messageTTL", 5)
        assert status in (200, 204)
        drift = await provisioner.verify(tenant)
        assert [d.path for d in drift.differences] == ["message_ttl_seconds"]
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok

        status, _ = await admin.call("DELETE", f"/namespaces/{names.pulsar_namespace}")
        assert status in (200, 204)
        gone = await provisioner.verify(tenant)
        assert not gone.exists and gone.missing == [f"namespace {names.pulsar_namespace}"]
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok


async def test_delete_keeps_a_namespace_with_topics_unless_purge_then_removes_it_and_the_tenant(
    provisioner: PulsarProvisioner, admin: Admin, pulsar_service: dict[str, str],
    make_tenant: Callable[..., TenantSpec],
) -> None:
    async def pulsar_tenants(of: TenantSpec) -> int:
        status, _ = await admin.call("GET", f"/tenants/{of.names().pulsar_tenant}")
        assert status in (200, 404)
        return 1 if status == 200 else 0

    tenant, other = make_tenant(), make_tenant()
    names = tenant.names()
    async with applied(provisioner, tenant, other):
        client = pulsar.Client(pulsar_service["PULSAR_URL"])
        try:
            producer = client.create_producer(f"persistent://{names.pulsar_namespace}/events")
            producer.send(b"hello")
            producer.close()
        finally:
            client.close()
        items = [f"namespace {names.pulsar_namespace}", f"tenant {names.pulsar_tenant}"]
        kept = await provisioner.delete(tenant, purge=False)  # its topic holds a retained message
        assert kept.kept == items and kept.deleted == []
        assert await pulsar_tenants(tenant) == 1
        await assert_deletes_only_this_tenant(provisioner, tenant, other, items, pulsar_tenants, purge=True)


# -- per-user access ---------------------------------------------------------------------------------------


async def test_grant_stores_the_roles_actions_idempotently_and_revoke_removes_them(
    provisioner: PulsarProvisioner, admin: Admin, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    namespace = tenant.names().pulsar_namespace
    viewer = UserGrant(user_id="dana@example.com", role=UserRole.VIEWER)
    async with applied(provisioner, tenant):
        await provisioner.grant_user(tenant, viewer)
        status, permissions = await admin.call("GET", f"/namespaces/{namespace}/permissions")
        assert status == 200 and permissions == {"dana@example.com": ["consume"]}
        assert (await provisioner.verify_user(tenant, viewer)).ok
        await provisioner.grant_user(tenant, viewer)
        _, again = await admin.call("GET", f"/namespaces/{namespace}/permissions")
        assert again == permissions

        editor = viewer.model_copy(update={"role": UserRole.EDITOR})
        assert not (await provisioner.verify_user(tenant, editor)).ok
        await provisioner.grant_user(tenant, editor)
        _, promoted = await admin.call("GET", f"/namespaces/{namespace}/permissions")
        assert {role: sorted(actions) for role, actions in promoted.items()} == {
            "dana@example.com": ["consume", "produce"]
        }
        other = UserGrant(user_id="erin", role=UserRole.ADMIN)
        await provisioner.grant_user(tenant, other)

        assert await provisioner.revoke_user(tenant, editor) is True
        _, left = await admin.call("GET", f"/namespaces/{namespace}/permissions")
        assert set(left) == {"erin"}  # only this user's permission went
        assert await provisioner.revoke_user(tenant, editor) is False  # a missing grant: success
        assert (await provisioner.verify_user(tenant, editor)).missing == [
            f"permission of dana@example.com on {namespace}"
        ]


async def test_grant_before_the_namespace_exists_is_transient_and_revoke_is_a_no_op(
    provisioner: PulsarProvisioner, admin: Admin, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    user = UserGrant(user_id="erin", role=UserRole.EDITOR)
    with pytest.raises(TransientError):
        await provisioner.grant_user(tenant, user)
    assert await provisioner.revoke_user(tenant, user) is False
    status, _ = await admin.call("GET", f"/tenants/{tenant.names().pulsar_tenant}")
    assert status == 404
