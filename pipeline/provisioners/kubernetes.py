"""Kubernetes: a namespace per tenant with its ResourceQuota, LimitRange, default-deny NetworkPolicies and
a RoleBinding of the tier's ClusterRole (``admin``) to the tenant's owner.

Objects (``<ns>`` is ``tenant-<id>``):

* ``Namespace <ns>``, labelled with the tenant id, tier and region;
* ``ResourceQuota tenant-quota``: requests and limits of cpu and memory, ``requests.nvidia.com/gpu``,
  ``requests.storage`` and ``pods`` from the tenant's quota (tier quota, then per-tenant overrides);
* ``LimitRange tenant-limits``: per-container defaults and maximums (pods need requests under a quota);
* ``NetworkPolicy default-deny`` (all ingress and egress), plus ``allow-same-namespace`` and ``allow-dns``
  as the tier says; the allow policies select only pods without the ``provisioning-service/quarantined``
  label, so that a quarantined workload is isolated (:mod:`pipeline.provisioners.kubernetes_quarantine`);
* ``RoleBinding tenant-admin``: ClusterRole ``admin`` for the owner (``User``); left out without an owner.

Per user (:class:`~pipeline.provisioners.base.UserAccess`): ``RoleBinding user-<hash of the user id>`` in the
namespace, subject ``User <user_id>``, ``roleRef`` the built-in ClusterRole ``view``, ``edit`` or ``admin`` by
the user's role (the aggregated roles every kube-apiserver bootstraps; the tenant's namespace has no Role of
its own to bind instead). The name is a hash because user ids may hold characters a name may not (``@``).

``apply`` creates what is missing and replaces what differs (a RoleBinding whose immutable ``roleRef``
differs is re-created). ``delete`` deletes the namespace, which takes everything in it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils import parse_quantity

from pipeline.kube_client import KubeClient
from pipeline.provisioners import kubernetes_quarantine as quarantine
from pipeline.provisioners.base import (
    BaseProvisioner,
    DeleteResult,
    Difference,
    ResourcePlan,
    TenantSpec,
    UserAccessResult,
    UserGrant,
    UserRole,
    VerifyResult,
    blocking,
    diff,
    http_error,
    is_transient_exception,
)
from pipeline.provisioners.errors import BackendUnavailable, PermanentError, ProvisioningError, TransientError
from pipeline.provisioners.naming import TenantNames, check_dns1123_label
from pipeline.provisioners.tiers import KubernetesTier, Quota, TierConfig, TiersConfig

logger = logging.getLogger(__name__)

LABEL_PREFIX = "provisioning-service"
MANAGED_BY = {"app.kubernetes.io/managed-by": "provisioning-service"}
QUOTA_NAME = "tenant-quota"
LIMIT_RANGE_NAME = "tenant-limits"
ADMIN_BINDING_NAME = "tenant-admin"
#: The built-in ClusterRole bound for each user role.
USER_CLUSTER_ROLES: dict[UserRole, str] = {UserRole.VIEWER: "view", UserRole.EDITOR: "edit", UserRole.ADMIN: "admin"}
USER_LABEL = f"{LABEL_PREFIX}/user-binding"
_QUANTITY_MAPS = {"hard", "default", "defaultRequest", "max", "min"}
_TIMEOUT = (5.0, 30.0)
#: The allow policies' pods: all but quarantined ones (policies are additive: no allow may select those).
_NOT_QUARANTINED_PODS: dict[str, Any] = {"matchExpressions": [quarantine.NOT_QUARANTINED]}


# -- manifests (pure) ------------------------------------------------------------------------------------------


def cpu_quantity(cores: float) -> str:
    millis = round(Decimal(str(cores)) * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def quota_hard(quota: Quota, pods: int) -> dict[str, str]:
    cpu = cpu_quantity(quota.cpu_cores)
    memory = f"{quota.memory_gib}Gi"
    return {
        "requests.cpu": cpu,
        "limits.cpu": cpu,
        "requests.memory": memory,
        "limits.memory": memory,
        "requests.nvidia.com/gpu": str(quota.gpus),
        "requests.storage": f"{quota.storage_gib}Gi",
        "pods": str(pods),
    }


def resource_quota_manifest(namespace: str, quota: Quota, pods: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {"hard": quota_hard(quota, pods)},
    }


def manifests(tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> list[dict[str, Any]]:
    """Every object of the tenant's namespace, in creation order."""
    ns = check_dns1123_label(names.kubernetes_namespace)
    kube: KubernetesTier = tier.kubernetes
    labels = {
        **MANAGED_BY,
        f"{LABEL_PREFIX}/tenant-id": names.tenant_id,
        f"{LABEL_PREFIX}/tier": tier.name,
        f"{LABEL_PREFIX}/region": tenant.region,
    }
    namespace: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
    if tenant.owner_user_id:
        namespace["metadata"]["annotations"] = {f"{LABEL_PREFIX}/owner": tenant.owner_user_id}
    limits = kube.limit_range
    out: list[dict[str, Any]] = [
        namespace,
        resource_quota_manifest(ns, tenant.effective_quota(tier), kube.pods),
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": LIMIT_RANGE_NAME, "namespace": ns, "labels": dict(MANAGED_BY)},
            "spec": {"limits": [{
                "type": "Container",
                "default": {"cpu": limits.default_cpu, "memory": limits.default_memory},
                "defaultRequest": {"cpu": limits.default_request_cpu, "memory": limits.default_request_memory},
                "max": {"cpu": limits.max_cpu, "memory": limits.max_memory},
            }]},
        },
    ]
    policy = kube.network_policy
    if policy.default_deny:
        out.append(_network_policy(ns, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    if policy.allow_same_namespace:
        out.append(_network_policy(ns, "allow-same-namespace", {
            "podSelector": _NOT_QUARANTINED_PODS,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
            "egress": [{"to": [{"podSelector": {}}]}],
        }))
    if policy.allow_dns:
        out.append(_network_policy(ns, "allow-dns", {
            "podSelector": _NOT_QUARANTINED_PODS,
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }],
        }))
    if tenant.owner_user_id:
        out.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ADMIN_BINDING_NAME, "namespace": ns, "labels": dict(MANAGED_BY)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": kube.admin_cluster_role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": tenant.owner_user_id}],
        })
    return out


def user_binding_name(user_id: str) -> str:
    """The user's RoleBinding name: deterministic, a DNS-1123 label whatever the id holds, never
    ``tenant-admin`` (the owner's binding)."""
    return "user-" + hashlib.sha256(user_id.encode()).hexdigest()[:24]


def user_binding_manifest(namespace: str, user: UserGrant) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": user_binding_name(user.user_id),
            "namespace": namespace,
            "labels": {**MANAGED_BY, USER_LABEL: "true"},
            "annotations": {f"{LABEL_PREFIX}/user": user.user_id},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": USER_CLUSTER_ROLES[user.role]},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user.user_id}],
    }


def _network_policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": spec,
    }


def _where(manifest: dict[str, Any]) -> tuple[str, ...]:
    """``(name, namespace)`` of a namespaced object, ``(name,)`` of a cluster-scoped one."""
    metadata = manifest["metadata"]
    return (metadata["name"], metadata["namespace"]) if metadata.get("namespace") else (metadata["name"],)


def object_label(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind'].lower()} {manifest['metadata']['name']}"


def _canonical(value: Any, key: str = "") -> Any:
    """``value`` with quantities as numbers, so ``0.5`` and ``500m`` compare equal."""
    if isinstance(value, dict):
        if key in _QUANTITY_MAPS:
            return {k: _quantity(v) for k, v in value.items()}
        return {k: _canonical(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(item, key) for item in value]
    return value


def _quantity(value: Any) -> Any:
    try:
        return str(parse_quantity(value).normalize())  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        return value


def _compared(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest that must match on the server (labels/annotations we set, spec, RBAC fields)."""
    metadata = {key: manifest["metadata"][key] for key in ("labels", "annotations") if key in manifest["metadata"]}
    body = {key: value for key, value in manifest.items() if key not in {"apiVersion", "kind", "metadata"}}
    compared: dict[str, Any] = _canonical({"metadata": metadata, **body})
    return compared


# -- the provisioner ---------------------------------------------------------------------------------------------


class KubernetesProvisioner(BaseProvisioner):
    resource = "kubernetes"
    data_bearing = False

    def __init__(self, tiers: TiersConfig, kubeconfig: Path | None = None, *, context: str | None = None) -> None:
        super().__init__(tiers)
        self._kube = KubeClient(kubeconfig, context)
        self._kubeconfig = kubeconfig
        self.address = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster API server"

    # -- connection ---------------------------------------------------------------------------------------------

    def _client(self) -> k8s.ApiClient:
        try:
            return self._kube.get()
        except (ConfigException, OSError) as exc:
            if self._kubeconfig is not None and not self._kubeconfig.exists():
                # The cluster writes its kubeconfig when it is up (``python -m devstack`` starting it): wait.
                raise BackendUnavailable(f"the kubeconfig {self._kubeconfig} does not exist (yet)",
                                         resource=self.resource, address=self.address) from exc
            raise PermanentError(f"cannot load the Kubernetes configuration: {exc}", resource=self.resource) from exc

    def _drop_client(self) -> None:
        self._kube.close()

    async def aclose(self) -> None:
        await blocking(self._drop_client)

    async def _on_failure(self, error: ProvisioningError) -> None:
        if error.retryable:
            await blocking(self._drop_client)

    def _classify(self, exc: Exception) -> ProvisioningError:
        if isinstance(exc, ApiException):
            return http_error(self.resource, exc.status or 0, str(exc.reason), str(exc.body or ""))
        if isinstance(exc, urllib3.exceptions.HTTPError) or is_transient_exception(exc):
            return TransientError(f"{type(exc).__name__}: {exc}", resource=self.resource)
        return PermanentError(f"{type(exc).__name__}: {exc}", resource=self.resource)

    # -- generic object operations ---------------------------------------------------------------------------

    def _ops(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any],
                                       Callable[..., Any], type[Any]]:
        """(read, create, replace, delete, model) for ``kind``; namespaced calls take (name, namespace)."""
        api = self._client()
        core, net, rbac = k8s.CoreV1Api(api), k8s.NetworkingV1Api(api), k8s.RbacAuthorizationV1Api(api)
        table: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any],
                               Callable[..., Any], type[Any]]] = {
            "Namespace": (core.read_namespace, core.create_namespace, core.replace_namespace,
                          core.delete_namespace, k8s.V1Namespace),
            "ResourceQuota": (core.read_namespaced_resource_quota, core.create_namespaced_resource_quota,
                              core.replace_namespaced_resource_quota, core.delete_namespaced_resource_quota,
                              k8s.V1ResourceQuota),
            "LimitRange": (core.read_namespaced_limit_range, core.create_namespaced_limit_range,
                           core.replace_namespaced_limit_range, core.delete_namespaced_limit_range,
                           k8s.V1LimitRange),
            "NetworkPolicy": (net.read_namespaced_network_policy, net.create_namespaced_network_policy,
                              net.replace_namespaced_network_policy, net.delete_namespaced_network_policy,
                              k8s.V1NetworkPolicy),
            "RoleBinding": (rbac.read_namespaced_role_binding, rbac.create_namespaced_role_binding,
                            rbac.replace_namespaced_role_binding, rbac.delete_namespaced_role_binding,
                            k8s.V1RoleBinding),
        }
        return table[manifest_kind(kind)]

    def read_object(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The server's copy of ``manifest``'s object as a plain dict, or None."""
        read, _, _, _, _ = self._ops(manifest["kind"])
        try:
            obj = read(*_where(manifest), _request_timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result = self._client().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return cast(dict[str, Any], result)

    def _ensure(self, manifest: dict[str, Any]) -> str:
        """Create or replace one object; returns what was done ("created", "replaced", "unchanged")."""
        _, create, replace, delete, model = self._ops(manifest["kind"])
        where = _where(manifest)
        current = self.read_object(manifest)
        if current is None:
            try:
                create(*where[1:], model.model_validate(manifest), _request_timeout=_TIMEOUT)
            except ApiException as exc:
                if exc.status != 409:  # created concurrently: compare on the next apply
                    raise
            return "created"
        if current.get("metadata", {}).get("deletionTimestamp"):
            raise TransientError(f"{object_label(manifest)} is being deleted; apply again once it is gone",
                                 resource=self.resource)
        if not diff(_compared(manifest), _canonical(current)):
            return "unchanged"
        if manifest["kind"] == "RoleBinding" and current.get("roleRef") != manifest["roleRef"]:
            delete(*where, _request_timeout=_TIMEOUT)  # roleRef is immutable
            create(*where[1:], model.model_validate(manifest), _request_timeout=_TIMEOUT)
            return "re-created"
        merged = {**manifest, "metadata": {
            **manifest["metadata"],
            "resourceVersion": current["metadata"].get("resourceVersion"),
            # Labels and annotations others added are kept; the spec is ours.
            "labels": {**current["metadata"].get("labels", {}), **manifest["metadata"].get("labels", {})},
            "annotations": {**current["metadata"].get("annotations", {}),
                            **manifest["metadata"].get("annotations", {})},
        }}
        replace(*where, model.model_validate(merged), _request_timeout=_TIMEOUT)
        return "replaced"

    # -- the interface ------------------------------------------------------------------------------------------

    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        objects = manifests(tenant, names, tier)
        plan_names = {"namespace": names.kubernetes_namespace}
        for manifest in objects[1:]:
            key = manifest["kind"].lower()
            name = manifest["metadata"]["name"]
            plan_names[key] = f"{plan_names[key]},{name}" if key in plan_names else name
        return plan_names, {"quota": tenant.effective_quota(tier).model_dump(), "manifests": objects}

    def _apply_sync(self, plan: ResourcePlan) -> dict[str, str]:
        done = {}
        for manifest in plan.settings["manifests"]:
            done[object_label(manifest)] = self._ensure(manifest)
        changed = {key: value for key, value in done.items() if value != "unchanged"}
        if changed:
            logger.debug("kubernetes namespace %s: %s", plan.names["namespace"], changed)
        return done

    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan:
        await blocking(self._apply_sync, plan)
        return plan

    def _verify_sync(self, plan: ResourcePlan) -> tuple[bool, list[str], list[Difference]]:
        missing: list[str] = []
        differences: list[Difference] = []
        objects = plan.settings["manifests"]
        namespace = self.read_object(objects[0])
        if namespace is None or namespace.get("metadata", {}).get("deletionTimestamp"):
            return False, [object_label(m) for m in objects], []
        for manifest in objects:
            current = namespace if manifest is objects[0] else self.read_object(manifest)
            if current is None:
                missing.append(object_label(manifest))
                continue
            differences += diff(_compared(manifest), _canonical(current), object_label(manifest))
        return True, missing, differences

    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult:
        exists, missing, differences = await blocking(self._verify_sync, plan)
        return self._verify_result(plan, exists=exists, missing=missing, differences=differences)

    def _delete_sync(self, plan: ResourcePlan) -> bool:
        _, _, _, delete, _ = self._ops("Namespace")
        current = self.read_object(plan.settings["manifests"][0])
        if current is None:
            return False
        if not current.get("metadata", {}).get("deletionTimestamp"):
            try:
                delete(plan.names["namespace"], propagation_policy="Background", _request_timeout=_TIMEOUT)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return False
        return True

    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult:
        item = f"namespace {plan.names['namespace']} and everything in it"
        deleted = await blocking(self._delete_sync, plan)
        return self._delete_result(plan, deleted=[item] if deleted else [], absent=[] if deleted else [item])

    async def update_quota(self, tenant: TenantSpec, quota: Quota) -> bool:
        """Set the tenant's ResourceQuota to ``quota`` (``PUT /api/v1/tenants/{id}/quota``).

        Returns False when the namespace does not exist yet (nothing to update: the next ``apply`` creates
        the quota from ``tenant.quota``, so pass the quota table's numbers there). Raises like ``apply``.
        """
        names = tenant.names()
        tier = self.tiers.tier(tenant.tier)
        manifest = resource_quota_manifest(names.kubernetes_namespace, quota, tier.kubernetes.pods)
        namespace_manifest = {"kind": "Namespace", "metadata": {"name": names.kubernetes_namespace}}

        def run() -> bool:
            current = self.read_object(namespace_manifest)
            if current is None or current.get("metadata", {}).get("deletionTimestamp"):
                return False
            self._ensure(manifest)
            return True

        return await self._run("update_quota", tenant, lambda: blocking(run))

    # -- quarantine (pipeline/provisioners/kubernetes_quarantine.py) ------------------------------------------

    async def quarantine_workload(self, tenant: TenantSpec, workload: str) -> dict[str, Any]:
        """Isolate the tenant's Deployment or StatefulSet ``workload`` (idempotent; see the module it calls)."""
        names = tenant.names()
        policies = [m for m in manifests(tenant, names, self.tiers.tier(tenant.tier)) if m["kind"] == "NetworkPolicy"]
        ns = names.kubernetes_namespace
        return await self._run("quarantine", tenant, lambda: blocking(
            self._isolation, lambda api: quarantine.isolate(api, ns, workload, policies, MANAGED_BY), workload))

    async def release_workload(self, tenant: TenantSpec, workload: str) -> dict[str, Any]:
        """End the isolation of ``workload`` (labels removed, its deny-all policy deleted; idempotent)."""
        ns = tenant.names().kubernetes_namespace
        return await self._run("release_quarantine", tenant, lambda: blocking(
            self._isolation, lambda api: quarantine.release(api, ns, workload), workload))

    def _isolation(self, step: Callable[[quarantine.KubeWorkloads], dict[str, Any]], workload: str) -> dict[str, Any]:
        if not quarantine.is_workload_name(workload):
            raise PermanentError(f"{workload[:64]!r} is not a Kubernetes workload name", resource=self.resource)
        try:
            return step(quarantine.KubeWorkloads(self._client, self._ensure, _TIMEOUT))
        except (LookupError, ValueError) as exc:
            raise PermanentError(str(exc), resource=self.resource) from exc

    # -- per-user access --------------------------------------------------------------------------------------

    def _namespace_live(self, namespace: str) -> bool:
        current = self.read_object({"kind": "Namespace", "metadata": {"name": namespace}})
        return current is not None and not current.get("metadata", {}).get("deletionTimestamp")

    async def grant_user(self, tenant: TenantSpec, user: UserGrant) -> dict[str, Any]:
        namespace = tenant.names().kubernetes_namespace
        manifest = user_binding_manifest(namespace, user)

        def run() -> dict[str, Any]:
            if not self._namespace_live(namespace):
                # The tenant's create command may still be running; the executor retries with backoff.
                raise TransientError(f"namespace {namespace} does not exist (yet)", resource=self.resource)
            done = self._ensure(manifest)
            return {"rolebinding": manifest["metadata"]["name"], "clusterrole": manifest["roleRef"]["name"],
                    "done": done}

        return await self._run("grant_user", tenant, lambda: blocking(run))

    async def revoke_user(self, tenant: TenantSpec, user: UserGrant) -> bool:
        namespace = tenant.names().kubernetes_namespace
        manifest = user_binding_manifest(namespace, user)

        def run() -> bool:
            _, _, _, delete, _ = self._ops("RoleBinding")
            if self.read_object(manifest) is None:
                return False
            try:
                delete(*_where(manifest), _request_timeout=_TIMEOUT)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return False
            return True

        return await self._run("revoke_user", tenant, lambda: blocking(run))

    async def verify_user(self, tenant: TenantSpec, user: UserGrant) -> UserAccessResult:
        names = tenant.names()
        manifest = user_binding_manifest(names.kubernetes_namespace, user)

        def run() -> UserAccessResult:
            result = UserAccessResult(resource=self.resource, tenant_id=names.tenant_id, user_id=user.user_id)
            current = self.read_object(manifest)
            if current is None:
                result.missing.append(object_label(manifest))
            else:
                result.differences += diff(_compared(manifest), _canonical(current), object_label(manifest))
            return result

        return await self._run("verify_user", tenant, lambda: blocking(run))


def manifest_kind(kind: str) -> str:
    if kind not in {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "RoleBinding"}:
        raise PermanentError(f"unsupported kind {kind}", resource="kubernetes")
    return kind
