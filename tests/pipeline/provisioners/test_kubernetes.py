"""The Kubernetes provisioner: pure manifests, and against the local kube-apiserver (checked with the client)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from pipeline.provisioners.base import TenantSpec, UserGrant, UserRole
from pipeline.provisioners.errors import TransientError
from pipeline.provisioners.kubernetes import (
    ADMIN_BINDING_NAME,
    KubernetesProvisioner,
    _canonical,
    _compared,
    cpu_quantity,
    manifests,
    quota_hard,
    user_binding_name,
)
from pipeline.provisioners.tiers import Quota, QuotaOverride, TiersConfig
from tests.pipeline.provisioners.conftest import applied, deleted_after, provisioner_fixture


@pytest.mark.parametrize(("cores", "quantity"), [(2, "2"), (0.5, "500m"), (1.25, "1250m"), (32.0, "32"),
                                                  (0.1, "100m")])
def test_cpu_quantities(cores: float, quantity: str) -> None:
    assert cpu_quantity(cores) == quantity


def test_quota_hard_has_every_quota_number() -> None:
    hard = quota_hard(Quota(cpu_cores=4, memory_gib=16, gpus=2, storage_gib=100), pods=30)
    assert hard == {
        "requests.cpu": "4", "limits.cpu": "4", "requests.memory": "16Gi", "limits.memory": "16Gi",
        "requests.nvidia.com/gpu": "2", "requests.storage": "100Gi", "pods": "30",
    }


def test_manifests_follow_tier_and_owner(tiers: TiersConfig, make_tenant: Callable[..., TenantSpec]) -> None:
    tenant = make_tenant("enterprise", quota=QuotaOverride(gpus=8))
    objects = manifests(tenant, tenant.names(), tiers.tier("enterprise"))
    kinds = [(m["kind"], m["metadata"]["name"]) for m in objects]
    ns = tenant.names().kubernetes_namespace
    assert kinds == [("Namespace", ns), ("ResourceQuota", "tenant-quota"), ("LimitRange", "tenant-limits"),
                     ("NetworkPolicy", "default-deny"), ("NetworkPolicy", "allow-same-namespace"),
                     ("NetworkPolicy", "allow-dns"), ("RoleBinding", "tenant-admin")]
    assert objects[1]["spec"]["hard"]["requests.nvidia.com/gpu"] == "8"
    assert objects[-1]["subjects"][0]["name"] == tenant.owner_user_id
    no_owner = tenant.model_copy(update={"owner_user_id": None})
    assert "RoleBinding" not in [m["kind"] for m in manifests(no_owner, no_owner.names(), tiers.tier("free"))]


def test_quantities_compare_by_value() -> None:
    manifest = {"kind": "LimitRange", "metadata": {"name": "x"},
                "spec": {"limits": [{"type": "Container", "max": {"cpu": "0.5", "memory": "1024Mi"}}]}}
    server = {"metadata": {"name": "x", "uid": "u"},
              "spec": {"limits": [{"type": "Container", "max": {"cpu": "500m", "memory": "1Gi"}}]}}
    assert _compared(manifest)["spec"] == _canonical(server)["spec"]


# -- against the real kube-apiserver -------------------------------------------------------------------------


provisioner = provisioner_fixture(KubernetesProvisioner)


@pytest.fixture
def api(kubernetes_service: dict[str, str]) -> Iterator[k8s.ApiClient]:
    api_client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(Path(kubernetes_service["KUBECONFIG"])), persist_config=False
    )
    yield api_client
    api_client.close()  # type: ignore[no-untyped-call]


def _plain(api: k8s.ApiClient, obj: object) -> dict[str, Any]:
    plain: dict[str, Any] = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return plain


def _read(api: k8s.ApiClient, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    """One object as the API server returns it (camelCase dict), None if absent."""
    core, net, rbac = k8s.CoreV1Api(api), k8s.NetworkingV1Api(api), k8s.RbacAuthorizationV1Api(api)
    readers: dict[str, Callable[..., object]] = {
        "Namespace": core.read_namespace,
        "ResourceQuota": core.read_namespaced_resource_quota,
        "LimitRange": core.read_namespaced_limit_range,
        "NetworkPolicy": net.read_namespaced_network_policy,
        "RoleBinding": rbac.read_namespaced_role_binding,
    }
    try:
        obj = readers[kind](name, namespace) if namespace else readers[kind](name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return _plain(api, obj)


def _list(api: k8s.ApiClient, kind: str, namespace: str) -> list[dict[str, Any]]:
    core, net, rbac = k8s.CoreV1Api(api), k8s.NetworkingV1Api(api), k8s.RbacAuthorizationV1Api(api)
    listers: dict[str, Callable[[str], object]] = {
        "ResourceQuota": core.list_namespaced_resource_quota,
        "LimitRange": core.list_namespaced_limit_range,
        "NetworkPolicy": net.list_namespaced_network_policy,
        "RoleBinding": rbac.list_namespaced_role_binding,
    }
    items: list[dict[str, Any]] = _plain(api, listers[kind](namespace)).get("items", [])
    return items


def _gone_or_terminating(api: k8s.ApiClient, namespace: str) -> bool:
    ns = _read(api, "Namespace", namespace)
    # The local stack runs no controller-manager, so a deleted namespace stays Terminating.
    return ns is None or bool(ns["metadata"].get("deletionTimestamp"))


def _versions(api: k8s.ApiClient, namespace: str) -> dict[str, str]:
    ns = _read(api, "Namespace", namespace)
    assert ns is not None
    found = {"Namespace": ns["metadata"]["resourceVersion"]}
    for kind in ("ResourceQuota", "LimitRange", "NetworkPolicy", "RoleBinding"):
        for item in _list(api, kind, namespace):
            found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return found


@pytest.mark.integration
async def test_apply_creates_the_namespace_and_its_policies(
    provisioner: KubernetesProvisioner, api: k8s.ApiClient, make_tenant: Callable[..., TenantSpec],
    tiers: TiersConfig,
) -> None:
    tenant = make_tenant("enterprise")
    ns = tenant.names().kubernetes_namespace
    async with applied(provisioner, tenant):
        namespace = _read(api, "Namespace", ns)
        assert namespace is not None
        labels = namespace["metadata"]["labels"]
        assert labels["provisioning-service/tenant-id"] == tenant.tenant_id
        assert labels["provisioning-service/tier"] == "enterprise"
        quota = _read(api, "ResourceQuota", "tenant-quota", ns)
        assert quota is not None and quota["spec"]["hard"] == {
            "requests.cpu": "32", "limits.cpu": "32", "requests.memory": "128Gi", "limits.memory": "128Gi",
            "requests.nvidia.com/gpu": "4", "requests.storage": "1000Gi", "pods": "200"}
        limit_range = _read(api, "LimitRange", "tenant-limits", ns)
        assert limit_range is not None
        limits = limit_range["spec"]["limits"][0]
        assert limits["type"] == "Container" and limits["max"] == {"cpu": "8", "memory": "32Gi"}
        assert limits["default"] == {"cpu": "500m", "memory": "512Mi"}
        deny = _read(api, "NetworkPolicy", "default-deny", ns)
        assert deny is not None and deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        assert {p["metadata"]["name"] for p in _list(api, "NetworkPolicy", ns)} == {
            "default-deny", "allow-same-namespace", "allow-dns"}
        binding = _read(api, "RoleBinding", "tenant-admin", ns)
        assert binding is not None
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) == ("ClusterRole", "admin")
        assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("User", tenant.owner_user_id)]
        assert (await provisioner.verify(tenant)).ok


@pytest.mark.integration
async def test_apply_twice_writes_nothing(
    provisioner: KubernetesProvisioner, api: k8s.ApiClient, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("free")
    ns = tenant.names().kubernetes_namespace
    async with deleted_after(provisioner, tenant):
        first = await provisioner.apply(tenant)
        before = _versions(api, ns)
        assert await provisioner.apply(tenant) == first
        assert _versions(api, ns) == before


@pytest.mark.integration
async def test_verify_detects_drift_and_apply_repairs_it(
    provisioner: KubernetesProvisioner, api: k8s.ApiClient, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("standard")
    ns = tenant.names().kubernetes_namespace
    async with applied(provisioner, tenant):
        k8s.NetworkingV1Api(api).delete_namespaced_network_policy("default-deny", ns)
        core = k8s.CoreV1Api(api)
        quota = _read(api, "ResourceQuota", "tenant-quota", ns)
        assert quota is not None
        quota["spec"]["hard"]["requests.cpu"] = "64"
        core.replace_namespaced_resource_quota("tenant-quota", ns, k8s.V1ResourceQuota.model_validate(quota))
        drift = await provisioner.verify(tenant)
        assert drift.exists and drift.drifted
        assert drift.missing == ["networkpolicy default-deny"]
        assert [d.path for d in drift.differences] == ["resourcequota tenant-quota.spec.hard.requests.cpu"]
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok
        repaired = _read(api, "ResourceQuota", "tenant-quota", ns)
        assert repaired is not None and repaired["spec"]["hard"]["requests.cpu"] == "8"


@pytest.mark.integration
async def test_update_quota_changes_the_resource_quota(
    provisioner: KubernetesProvisioner, api: k8s.ApiClient, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("standard")
    ns = tenant.names().kubernetes_namespace
    new_quota = Quota(cpu_cores=12.5, memory_gib=48, gpus=1, storage_gib=250)
    async with deleted_after(provisioner, tenant):
        assert await provisioner.update_quota(tenant, new_quota) is False  # no namespace yet
        await provisioner.apply(tenant)
        assert await provisioner.update_quota(tenant, new_quota) is True
        quota = _read(api, "ResourceQuota", "tenant-quota", ns)
        assert quota is not None
        hard = quota["spec"]["hard"]
        assert (hard["requests.cpu"], hard["requests.memory"], hard["requests.nvidia.com/gpu"],
                hard["requests.storage"]) == ("12500m", "48Gi", "1", "250Gi")
        # The quota table's numbers travel in the spec, so reconciliation keeps them.
        updated = tenant.model_copy(update={"quota": QuotaOverride(**new_quota.model_dump())})
        assert (await provisioner.verify(updated)).ok
        assert (await provisioner.verify(tenant)).drifted


@pytest.mark.integration
async def test_delete_removes_only_this_tenants_namespace(
    provisioner: KubernetesProvisioner, api: k8s.ApiClient, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant, other = make_tenant(), make_tenant(owner_user_id=None)
    async with applied(provisioner, tenant, other):
        assert _list(api, "RoleBinding", other.names().kubernetes_namespace) == []
        result = await provisioner.delete(tenant, purge=False)
        assert result.deleted and not result.kept
        assert _gone_or_terminating(api, tenant.names().kubernetes_namespace)
        gone = await provisioner.verify(tenant)
        assert not gone.exists and gone.drifted
        assert (await provisioner.verify(other)).ok


# -- per-user access ---------------------------------------------------------------------------------------


def test_user_binding_names_are_deterministic_dns_labels_and_never_the_owners() -> None:
    names = {user_binding_name(u) for u in ("a@b.io", "A@b.io", "x:y+z", "a" * 128)}
    assert len(names) == 4 and ADMIN_BINDING_NAME not in names
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) and len(n) <= 63 for n in names)
    assert user_binding_name("a@b.io") == user_binding_name("a@b.io")


@pytest.mark.integration
async def test_grant_binds_the_users_cluster_role_idempotently_and_revoke_removes_it(
    provisioner: KubernetesProvisioner, api: k8s.ApiClient, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    ns = tenant.names().kubernetes_namespace
    user = UserGrant(user_id="dana@example.com", role=UserRole.VIEWER)
    name = user_binding_name(user.user_id)
    async with applied(provisioner, tenant):
        await provisioner.grant_user(tenant, user)
        binding = _read(api, "RoleBinding", name, ns)
        assert binding is not None
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
        assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                        "name": "dana@example.com"}]
        version = binding["metadata"]["resourceVersion"]
        assert (await provisioner.verify_user(tenant, user)).ok
        await provisioner.grant_user(tenant, user)  # twice: the same object, untouched
        again = _read(api, "RoleBinding", name, ns)
        assert again is not None and again["metadata"]["resourceVersion"] == version

        # A promotion re-creates the binding with the new roleRef (immutable); verify saw the drift first.
        editor = user.model_copy(update={"role": UserRole.ADMIN})
        assert not (await provisioner.verify_user(tenant, editor)).ok
        await provisioner.grant_user(tenant, editor)
        promoted = _read(api, "RoleBinding", name, ns)
        assert promoted is not None and promoted["roleRef"]["name"] == "admin"

        assert await provisioner.revoke_user(tenant, editor) is True
        assert _read(api, "RoleBinding", name, ns) is None
        assert await provisioner.revoke_user(tenant, editor) is False  # a missing grant: success
        assert (await provisioner.verify_user(tenant, editor)).missing == [f"rolebinding {name}"]
        assert _read(api, "RoleBinding", "tenant-admin", ns) is not None  # the owner's binding stays


@pytest.mark.integration
async def test_grant_before_the_namespace_exists_is_transient_and_revoke_is_a_no_op(
    provisioner: KubernetesProvisioner, api: k8s.ApiClient, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    user = UserGrant(user_id="erin", role=UserRole.EDITOR)
    with pytest.raises(TransientError):
        await provisioner.grant_user(tenant, user)
    assert await provisioner.revoke_user(tenant, user) is False
    assert _read(api, "Namespace", tenant.names().kubernetes_namespace) is None
