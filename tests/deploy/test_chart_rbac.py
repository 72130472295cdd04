"""The chart's ClusterRole is exactly what the service uses: on the local kube-apiserver (RBAC on), a service
account bound to the rendered ClusterRole runs the Kubernetes provisioner (apply, drift repair, quota update,
per-user grants and revokes, a workload's quarantine and release, delete), the in-house compute provider
(allocate, status, list, release) and the scaling applier (read, scale). Every call the service makes is
recorded: a call the role does not grant fails the step (403), and a granted verb no call used fails the test
(least privilege)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import rest

from pipeline.compute.access import AccessSecrets
from pipeline.compute.kubernetes_provider import KubernetesComputeProvider, KubernetesProviderConfig, KubernetesShape
from pipeline.compute.request import ComputeRequest
from pipeline.provisioners.base import TenantSpec, UserGrant, UserRole
from pipeline.provisioners.kubernetes import MANAGED_BY, KubernetesProvisioner
from pipeline.provisioners.tiers import Quota, load_tiers
from pipeline.scaling.kube import ApplyRequest, DeploymentScaler
from tests.deploy.test_helm_chart import VALUES, helm, render

pytestmark = pytest.mark.integration

__all__ = ["helm"]  # the helm fixture, used by this module's tests

Call = tuple[str, str, str]  # (API group, resource[/subresource], verb)
_VERSIONED = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?P<rest>/.*)?$")


def call_of(method: str, url: str) -> Call:
    """The RBAC (group, resource, verb) of one REST call of the Kubernetes client."""
    parsed = urlparse(url)
    match = _VERSIONED.match(parsed.path)
    assert match is not None, url
    parts = [p for p in (match.group("rest") or "").split("/") if p]
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        parts = parts[2:]  # a namespaced resource: namespaces/<ns>/<resource>[/<name>[/<sub>]]
    resource = parts[0]
    named = len(parts) > 1
    if len(parts) > 2:
        resource = f"{resource}/{parts[2]}"
    verb = {"GET": "get" if named else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection"}[method]
    if verb == "list" and "watch=true" in parsed.query:
        verb = "watch"
    return match.group("group") or "", resource, verb


def granted(rules: list[dict[str, Any]]) -> set[Call]:
    return {(group, resource, verb) for rule in rules if "resourceNames" not in rule
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


@pytest.fixture(scope="module")
def chart_rules(helm: tuple[Path, dict[str, str]]) -> list[dict[str, Any]]:
    (role,) = [doc for doc in render(helm, VALUES["default"]) if doc["kind"] == "ClusterRole"]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


@pytest.fixture(scope="module")
def least_privilege(kubernetes_service: dict[str, str], chart_rules: list[dict[str, Any]],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, k8s.ApiClient]]:
    """A kubeconfig whose user is a service account bound to the chart's ClusterRole only; the admin client."""
    admin = k8s_config.new_client_from_config(config_file=kubernetes_service["KUBECONFIG"])
    core, rbac = k8s.CoreV1Api(admin), k8s.RbacAuthorizationV1Api(admin)
    run = uuid.uuid4().hex[:8]
    namespace, name = f"rbac-check-{run}", f"provisioning-rbac-check-{run}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="worker")))
    rbac.create_cluster_role(k8s.V1ClusterRole(metadata=k8s.V1ObjectMeta(name=name), rules=chart_rules))
    rbac.create_cluster_role_binding(k8s.V1ClusterRoleBinding(
        metadata=k8s.V1ObjectMeta(name=name),
        role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
        subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="worker", namespace=namespace)],
    ))
    token = core.create_namespaced_service_account_token(
        "worker", namespace, k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(
            audiences=[], expiration_seconds=3600))).status.token
    kubeconfig = yaml.safe_load(Path(kubernetes_service["KUBECONFIG"]).read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": token}
    path = tmp_path_factory.mktemp("rbac") / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    try:
        yield path, admin
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
        core.delete_namespace(namespace)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Call, int]]:
    """Every call any Kubernetes client of this process makes, with the status it got."""
    calls: list[tuple[Call, int]] = []
    original = rest.RESTClientObject.request

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            response = original(self, method, url, *args, **kwargs)
        except rest.ApiException as exc:
            calls.append((call_of(method, url), exc.status or 0))
            raise
        calls.append((call_of(method, url), response.status))
        return response

    monkeypatch.setattr(rest.RESTClientObject, "request", request)
    return calls


def drift(admin: k8s.ApiClient, namespace: str) -> None:
    """Change the labels the provisioner sets on every object of the tenant, so its next apply replaces each."""
    labels = {"metadata": {"labels": dict.fromkeys(MANAGED_BY, "drifted")}}
    core, net, rbac = k8s.CoreV1Api(admin), k8s.NetworkingV1Api(admin), k8s.RbacAuthorizationV1Api(admin)
    core.patch_namespace(namespace, labels)
    for item in core.list_namespaced_resource_quota(namespace).items:
        core.patch_namespaced_resource_quota(item.metadata.name, namespace, labels)
    for item in core.list_namespaced_limit_range(namespace).items:
        core.patch_namespaced_limit_range(item.metadata.name, namespace, labels)
    for item in net.list_namespaced_network_policy(namespace).items:
        net.patch_namespaced_network_policy(item.metadata.name, namespace, labels)
    for item in rbac.list_namespaced_role_binding(namespace).items:
        rbac.patch_namespaced_role_binding(item.metadata.name, namespace, labels)


async def test_the_chart_grants_exactly_what_the_service_calls(
    least_privilege: tuple[Path, k8s.ApiClient], chart_rules: list[dict[str, Any]],
    recorded: list[tuple[Call, int]],
) -> None:
    kubeconfig, admin = least_privilege
    tenant = TenantSpec(tenant_id=f"rbac-{uuid.uuid4().hex[:8]}", name="RBAC check", tier="standard",
                        owner_user_id="owner-1")
    namespace = tenant.names().kubernetes_namespace
    provisioner = KubernetesProvisioner(load_tiers(), kubeconfig)
    try:
        # tenant provisioning, drift repair and a quota change, as the service's account
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok
        drift(admin, namespace)
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok
        assert await provisioner.update_quota(tenant, Quota(cpu_cores=3, memory_gib=6, gpus=0, storage_gib=20))
        # a user per role (each binds its ClusterRole), a role change (re-created binding), revokes
        for role in UserRole:
            await provisioner.grant_user(tenant, UserGrant(user_id=f"user-{role.value}", role=role))
        await provisioner.grant_user(tenant, UserGrant(user_id="user-viewer", role=UserRole.EDITOR))
        for role in UserRole:
            await provisioner.revoke_user(tenant, UserGrant(user_id=f"user-{role.value}", role=role))

        # in-house compute: a Pod and its Secret, found again by label, released. The namespace's default
        # service account is what a cluster's controller manager makes (this API server runs without one).
        k8s.CoreV1Api(admin).create_namespaced_service_account(
            namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default")))
        config = KubernetesProviderConfig(price_per_vcpu_hour=0.01, price_per_gib_hour=0.001,
                                          shapes=[KubernetesShape(name="cpu-2", vcpus=2, memory_gib=4, capacity=1)])
        compute = KubernetesComputeProvider(config, kubeconfig=str(kubeconfig))
        request = ComputeRequest.model_validate({"tenant_id": tenant.tenant_id, "resources": {"vcpus": 2,
                                                 "memory_gib": 4}, "duration_hours": 1})
        token = uuid.uuid4().hex
        handle = await compute.allocate(config.offers()[0], request, client_token=token,
                                        setup=AccessSecrets.generate().setup())
        await compute.status(handle.allocation_id)
        assert handle.allocation_id in {a.allocation_id for a in await compute.list_allocations()}
        await compute.release_by_token(token)

        # scaling: a Deployment of the tenant (made by its admin), read and scaled by the service
        k8s.AppsV1Api(admin).create_namespaced_deployment(namespace, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "registry.invalid/api:1"}]}}}})
        report = DeploymentScaler(kubeconfig).run(ApplyRequest(tenant_id=tenant.tenant_id, workload="api", replicas=3))
        assert report.error is None and report.scaled, report

        # quarantine: a Deployment and a StatefulSet isolated (deny-all policy, labelled template and pods), the
        # Deployment's twice (a replace of its drifted policy), then both released (policies deleted)
        k8s.AppsV1Api(admin).create_namespaced_stateful_set(namespace, {
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"app": "db"}}, "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "registry.invalid/db:1"}]}}}})
        for app in ("api", "db"):
            k8s.CoreV1Api(admin).create_namespaced_pod(namespace, {
                "metadata": {"name": f"{app}-0", "labels": {"app": app}},
                "spec": {"containers": [{"name": app, "image": f"registry.invalid/{app}:1"}]}})
        for workload in ("api", "db"):
            assert (await provisioner.quarantine_workload(tenant, workload))["pods_labelled"] == 1
        drift(admin, namespace)
        assert (await provisioner.quarantine_workload(tenant, "api"))["policy"] == "replaced"
        for workload in ("api", "db"):
            assert (await provisioner.release_workload(tenant, workload))["policy_deleted"] is True
    finally:
        await provisioner.delete(tenant, purge=True)
        await provisioner.aclose()

    denied = sorted({call for call, status in recorded if status == 403})
    assert denied == [], f"the chart does not grant: {denied}"
    used = {call for call, _ in recorded}
    unused = sorted(granted(chart_rules) - used)
    assert unused == [], f"granted by the chart but never called: {unused}"
    bound = {name for rule in chart_rules if rule.get("verbs") == ["bind"] for name in rule["resourceNames"]}
    assert bound == {"admin", "edit", "view"}  # the ClusterRoles the owner's and the users' RoleBindings name
