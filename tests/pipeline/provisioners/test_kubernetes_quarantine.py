"""Quarantine isolation: the pure manifest builders, the order of the steps (an in-memory API), and against the
local kube-apiserver. The local server stores NetworkPolicies but runs no CNI that enforces them, so the tests
evaluate the stored policies' selectors themselves (:func:`matches`, :func:`allowed`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from pipeline.provisioners.base import TenantSpec
from pipeline.provisioners.errors import PermanentError
from pipeline.provisioners.kubernetes import MANAGED_BY, KubernetesProvisioner, manifests
from pipeline.provisioners.kubernetes_quarantine import (
    NOT_QUARANTINED,
    QUARANTINE_LABEL,
    is_workload_name,
    isolate,
    pod_selector,
    quarantine_policy_manifest,
    quarantine_policy_name,
    release,
    selector_string,
)
from pipeline.provisioners.tiers import TiersConfig
from tests.pipeline.provisioners.conftest import applied, provisioner_fixture

DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")


# -- a NetworkPolicy evaluator (the semantics the API documents; no CNI runs locally) -------------------------


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` and ``matchExpressions``, ANDed) selects ``labels``."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def allowed(policies: list[dict[str, Any]], labels: dict[str, str], direction: str) -> bool:
    """Whether a pod with ``labels`` may send or receive *any* traffic (``Ingress``/``Egress``): true when no
    policy of that direction selects it (not isolated), or one that selects it has a rule (policies add up)."""
    selecting = [p for p in policies if direction in p["spec"].get("policyTypes", [])
                 and matches(p["spec"]["podSelector"], labels)]
    rules = "ingress" if direction == "Ingress" else "egress"
    return not selecting or any(p["spec"].get(rules) for p in selecting)


def test_the_evaluator_follows_the_documented_selector_semantics() -> None:
    assert matches({}, {"app": "x"})
    assert matches({"matchLabels": {"app": "x"}}, {"app": "x", "b": "1"})
    assert not matches({"matchLabels": {"app": "x"}}, {"app": "y"})
    assert matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {})
    assert not matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {})
    assert not matches({"matchExpressions": [NOT_QUARANTINED]}, {QUARANTINE_LABEL: "true"})
    deny = {"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    allow = {"spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}}
    assert allowed([], {}, "Ingress") and not allowed([deny], {}, "Ingress")
    assert allowed([deny, allow], {}, "Ingress") and not allowed([deny, allow], {}, "Egress")


# -- pure builders --------------------------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
workload_names = st.lists(_label, min_size=1, max_size=5).map(".".join).filter(lambda n: len(n) <= 253)


@given(workload_names)
def test_policy_names_are_dns_labels_deterministic_and_readable_when_they_fit(workload: str) -> None:
    name = quarantine_policy_name(workload)
    assert len(name) <= 63 and DNS_LABEL.fullmatch(name) and name.startswith("quarantine-")
    assert quarantine_policy_name(workload) == name
    if len("quarantine-" + workload) <= 63 and "." not in workload:
        assert name == "quarantine-" + workload


@given(workload_names, workload_names)
def test_distinct_workloads_get_distinct_policies(first: str, second: str) -> None:
    assert (quarantine_policy_name(first) == quarantine_policy_name(second)) == (first == second)


def test_policy_names_at_the_limits() -> None:
    longest_plain = "w" * (63 - len("quarantine-"))
    assert quarantine_policy_name(longest_plain) == "quarantine-" + longest_plain
    one_more = quarantine_policy_name(longest_plain + "w")
    assert len(one_more) == 63 and one_more.startswith("quarantine-www") and one_more != "quarantine-" + longest_plain
    assert quarantine_policy_name("api.v2") != quarantine_policy_name("api-v2") == "quarantine-api-v2"
    assert is_workload_name("a" * 63 + "." + "b" * 189) and not is_workload_name("a" * 254)
    assert not is_workload_name("API") and not is_workload_name("a/../b") and not is_workload_name("")


def test_the_deny_all_policy_selects_the_workloads_pods_with_no_rule() -> None:
    selector = {"matchLabels": {"app": "api"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "edge"]}]}
    policy = quarantine_policy_manifest("tenant-acme", "api", selector, dict(MANAGED_BY))
    assert policy["metadata"]["name"] == "quarantine-api" and policy["metadata"]["namespace"] == "tenant-acme"
    assert policy["metadata"]["annotations"] == {"provisioning-service/workload": "api"}
    assert policy["spec"] == {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]}
    assert selector_string(policy["spec"]["podSelector"]) == "app=api,tier in (web,edge)"
    assert selector_string({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]},
                                                 {"key": "b", "operator": "Exists"}, NOT_QUARANTINED]}) \
        == f"a notin (1),b,!{QUARANTINE_LABEL}"
    with pytest.raises(ValueError, match="empty"):
        pod_selector({})
    with pytest.raises(ValueError, match="empty"):
        pod_selector({"matchLabels": {}})


def test_the_allow_policies_never_select_a_quarantined_pod(tiers: TiersConfig,
                                                           make_tenant: Callable[..., TenantSpec]) -> None:
    tenant = make_tenant("enterprise")
    policies = [m for m in manifests(tenant, tenant.names(), tiers.tier("enterprise")) if m["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["name"] for p in policies} == {"default-deny", "allow-same-namespace", "allow-dns"}
    pod = {"app": "api"}
    assert allowed(policies, pod, "Ingress") and allowed(policies, pod, "Egress")
    quarantined = {**pod, QUARANTINE_LABEL: "true"}
    assert not allowed(policies, quarantined, "Ingress") and not allowed(policies, quarantined, "Egress")


# -- the steps' order and idempotence (an in-memory API) ----------------------------------------------------


class MemoryApi:
    """Workloads, pods and policies of one namespace, in memory; ``calls`` records each write."""

    def __init__(self, workloads: dict[str, tuple[str, dict[str, Any]]], pods: dict[str, dict[str, str]]) -> None:
        self.workloads = workloads
        self.pods = pods
        self.policies: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def read_workload(self, namespace: str, name: str) -> tuple[str, dict[str, Any]] | None:
        return self.workloads.get(name)

    def patch_workload(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        labels = self.workloads[name][1]["spec"]["template"]["metadata"]["labels"]
        _merge(labels, patch["spec"]["template"]["metadata"]["labels"])
        self.calls.append(f"patch {kind} {name}")

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        def selected(labels: dict[str, str]) -> bool:
            for term in label_selector.split(","):
                key, _, value = term.partition("=")
                if (labels.get(key) != value) if value else (key not in labels):
                    return False
            return True
        return [{"metadata": {"name": n, "labels": dict(ls)}} for n, ls in sorted(self.pods.items()) if selected(ls)]

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        _merge(self.pods[name], patch["metadata"]["labels"])
        self.calls.append(f"patch pod {name}")

    def ensure(self, manifest: dict[str, Any]) -> str:
        name = manifest["metadata"]["name"]
        if self.policies.get(name) == manifest:
            return "unchanged"
        done = "replaced" if name in self.policies else "created"
        self.policies[name] = manifest
        self.calls.append(f"{done} policy {name}")
        return done

    def delete_policy(self, namespace: str, name: str) -> bool:
        self.calls.append(f"delete policy {name}")
        return self.policies.pop(name, None) is not None


def _merge(labels: dict[str, str], patch: dict[str, str | None]) -> None:
    for key, value in patch.items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value


def _deployment(app: str) -> tuple[str, dict[str, Any]]:
    return "Deployment", {"spec": {"selector": {"matchLabels": {"app": app}},
                                   "template": {"metadata": {"labels": {"app": app}}}}}


def test_isolate_then_release_in_order_and_idempotently(tiers: TiersConfig,
                                                         make_tenant: Callable[..., TenantSpec]) -> None:
    tenant = make_tenant("enterprise")
    ns = tenant.names().kubernetes_namespace
    allow = [m for m in manifests(tenant, tenant.names(), tiers.tier("enterprise")) if m["kind"] == "NetworkPolicy"]
    api = MemoryApi({"api": _deployment("api"), "etl": _deployment("etl")},
                    {"api-1": {"app": "api"}, "api-2": {"app": "api"}, "etl-1": {"app": "etl"}})
    done = isolate(api, ns, "api", allow, dict(MANAGED_BY))
    assert done == {"workload": "api", "kind": "Deployment", "network_policy": "quarantine-api", "policy": "created",
                    "pods_labelled": 2}
    # the policies first (a crash after them leaves a retry to finish), the template before the running pods
    assert api.calls == ["created policy default-deny", "created policy allow-same-namespace",
                         "created policy allow-dns", "created policy quarantine-api", "patch Deployment api",
                         "patch pod api-1", "patch pod api-2"]
    assert api.pods["etl-1"] == {"app": "etl"}
    assert api.workloads["api"][1]["spec"]["template"]["metadata"]["labels"] == {"app": "api",
                                                                                 QUARANTINE_LABEL: "true"}
    api.calls.clear()
    again = isolate(api, ns, "api", allow, dict(MANAGED_BY))
    assert again["policy"] == "unchanged" and again["pods_labelled"] == 0 and api.calls == []

    isolate(api, ns, "etl", allow, dict(MANAGED_BY))
    api.calls.clear()
    released = release(api, ns, "api")
    assert released == {"workload": "api", "network_policy": "quarantine-api", "policy_deleted": True,
                        "pods_unlabelled": 2, "workload_found": True}
    assert api.calls == ["patch Deployment api", "patch pod api-1", "patch pod api-2", "delete policy quarantine-api"]
    assert api.pods["etl-1"][QUARANTINE_LABEL] == "true" and "quarantine-etl" in api.policies  # etl stays
    api.calls.clear()
    assert release(api, ns, "api")["policy_deleted"] is False
    assert api.calls == ["delete policy quarantine-api"]


def test_isolating_a_missing_workload_or_one_selecting_every_pod_is_refused() -> None:
    api = MemoryApi({"open": ("StatefulSet", {"spec": {"selector": {}, "template": {"metadata": {}}}})}, {})
    with pytest.raises(LookupError, match="no Deployment or StatefulSet 'ghost'"):
        isolate(api, "tenant-acme", "ghost", [], {})
    with pytest.raises(ValueError, match="empty"):
        isolate(api, "tenant-acme", "open", [], {})
    assert api.calls == []
    assert release(api, "tenant-acme", "ghost")["workload_found"] is False


# -- against the real kube-apiserver -------------------------------------------------------------------------

provisioner = provisioner_fixture(KubernetesProvisioner)
LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # a workload name at the 253-character limit


@pytest.fixture
def admin(kubernetes_service: dict[str, str]) -> Iterator[k8s.ApiClient]:
    api_client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(Path(kubernetes_service["KUBECONFIG"])), persist_config=False
    )
    yield api_client
    api_client.close()  # type: ignore[no-untyped-call]


def _plain(api: k8s.ApiClient, obj: object) -> dict[str, Any]:
    plain: dict[str, Any] = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return plain


def _policies(admin: k8s.ApiClient, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _plain(admin, k8s.NetworkingV1Api(admin).list_namespaced_network_policy(ns))["items"]
    return items


def _pod_labels(admin: k8s.ApiClient, ns: str) -> dict[str, dict[str, str]]:
    pods = _plain(admin, k8s.CoreV1Api(admin).list_namespaced_pod(ns))["items"]
    return {p["metadata"]["name"]: p["metadata"].get("labels", {}) for p in pods}


def _template_labels(admin: k8s.ApiClient, ns: str, kind: str, name: str) -> dict[str, str]:
    apps = k8s.AppsV1Api(admin)
    read = apps.read_namespaced_deployment if kind == "Deployment" else apps.read_namespaced_stateful_set
    labels: dict[str, str] = _plain(admin, read(name, ns))["spec"]["template"]["metadata"]["labels"]
    return labels


def _workloads(admin: k8s.ApiClient, ns: str) -> None:
    """The tenant's workloads, as its admin would make them: a Deployment named at the length limit selecting
    ``app=api``, a StatefulSet selecting by an expression, two pods of each (the local server runs no
    controller-manager, so the pods are made by hand) and an unrelated pod."""
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
    container = {"name": "c", "image": "registry.invalid/app:1"}
    apps.create_namespaced_deployment(ns, {
        "metadata": {"name": LONGEST}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                                                "template": {"metadata": {"labels": {"app": "api"}},
                                                             "spec": {"containers": [container]}}}})
    apps.create_namespaced_stateful_set(ns, {
        "metadata": {"name": "db"}, "spec": {
            "serviceName": "db", "replicas": 2,
            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [container]}}}})
    for name, app in (("api-1", "api"), ("api-2", "api"), ("db-0", "db"), ("db-1", "db"), ("web-1", "web")):
        core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": {"app": app}},
                                        "spec": {"containers": [container]}})


def _isolated(policies: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    return not allowed(policies, labels, "Ingress") and not allowed(policies, labels, "Egress")


@pytest.mark.integration
async def test_quarantine_isolates_the_workloads_pods_and_release_restores_them(
    provisioner: KubernetesProvisioner, admin: k8s.ApiClient, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("enterprise")
    ns = tenant.names().kubernetes_namespace
    async with applied(provisioner, tenant):
        _workloads(admin, ns)
        policies = _policies(admin, ns)
        assert all(not _isolated(policies, labels) for labels in _pod_labels(admin, ns).values())

        done = await provisioner.quarantine_workload(tenant, LONGEST)
        name = quarantine_policy_name(LONGEST)
        assert done["network_policy"] == name and len(name) == 63 and done["pods_labelled"] == 2
        deny = k8s.NetworkingV1Api(admin).read_namespaced_network_policy(name, ns)
        spec = _plain(admin, deny)["spec"]
        assert spec == {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress", "Egress"]}
        assert _template_labels(admin, ns, "Deployment", LONGEST) == {"app": "api", QUARANTINE_LABEL: "true"}
        policies, pods = _policies(admin, ns), _pod_labels(admin, ns)
        allow = [p for p in policies if p["spec"].get("ingress") or p["spec"].get("egress")]
        assert {p["metadata"]["name"] for p in allow} == {"allow-same-namespace", "allow-dns"}
        for pod in ("api-1", "api-2"):
            assert not any(matches(p["spec"]["podSelector"], pods[pod]) for p in allow)
            assert matches(spec["podSelector"], pods[pod]) and _isolated(policies, pods[pod])
        # a pod the Deployment makes later is born from the labelled template: isolated too
        assert _isolated(policies, _template_labels(admin, ns, "Deployment", LONGEST))
        for pod in ("db-0", "db-1", "web-1"):
            assert not _isolated(policies, pods[pod]) and QUARANTINE_LABEL not in pods[pod]

        before = {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in policies}
        again = await provisioner.quarantine_workload(tenant, LONGEST)  # idempotent: nothing written again
        assert again["policy"] == "unchanged" and again["pods_labelled"] == 0
        assert {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in _policies(admin, ns)} == before

        await provisioner.quarantine_workload(tenant, "db")  # a StatefulSet, selected by an expression
        policies, pods = _policies(admin, ns), _pod_labels(admin, ns)
        assert _isolated(policies, pods["db-0"]) and _isolated(policies, pods["db-1"])

        released = await provisioner.release_workload(tenant, LONGEST)
        assert released["policy_deleted"] is True and released["pods_unlabelled"] == 2
        policies, pods = _policies(admin, ns), _pod_labels(admin, ns)
        assert name not in {p["metadata"]["name"] for p in policies}
        assert _template_labels(admin, ns, "Deployment", LONGEST) == {"app": "api"}
        for pod in ("api-1", "api-2", "web-1"):
            assert QUARANTINE_LABEL not in pods[pod] and not _isolated(policies, pods[pod])
        assert _isolated(policies, pods["db-0"])  # the other quarantine stays
        assert (await provisioner.release_workload(tenant, LONGEST))["policy_deleted"] is False  # 404: gone
        await provisioner.release_workload(tenant, "db")
        assert all(not _isolated(_policies(admin, ns), labels) for labels in _pod_labels(admin, ns).values())
        assert (await provisioner.verify(tenant)).ok


@pytest.mark.integration
async def test_quarantine_re_applies_allow_policies_of_a_namespace_provisioned_before_the_rule(
    provisioner: KubernetesProvisioner, admin: k8s.ApiClient, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("enterprise")
    ns = tenant.names().kubernetes_namespace
    async with applied(provisioner, tenant):
        _workloads(admin, ns)
        net = k8s.NetworkingV1Api(admin)
        for name in ("allow-same-namespace", "allow-dns"):  # as they were before this change: every pod
            net.patch_namespaced_network_policy(name, ns, {"spec": {"podSelector": {"matchExpressions": None}}})
        assert not _isolated(_policies(admin, ns), {"app": "api", QUARANTINE_LABEL: "true"})
        await provisioner.quarantine_workload(tenant, LONGEST)
        assert _isolated(_policies(admin, ns), _pod_labels(admin, ns)["api-1"])


@pytest.mark.integration
async def test_quarantine_of_a_workload_that_does_not_exist_fails_permanently(
    provisioner: KubernetesProvisioner, admin: k8s.ApiClient, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    ns = tenant.names().kubernetes_namespace
    async with applied(provisioner, tenant):
        with pytest.raises(PermanentError, match="no Deployment or StatefulSet"):
            await provisioner.quarantine_workload(tenant, f"ghost-{uuid.uuid4().hex[:6]}")
        with pytest.raises(PermanentError, match="not a Kubernetes workload name"):
            await provisioner.quarantine_workload(tenant, "Not/A/Name")
        names = {p["metadata"]["name"] for p in _policies(admin, ns)}
        assert not any(n.startswith("quarantine-") for n in names)
