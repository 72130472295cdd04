"""Network isolation of a quarantined workload (a ``critical`` resource anomaly, until a platform admin releases it).

Kubernetes NetworkPolicies are additive: a pod gets any traffic that *some* policy selecting it allows. A
deny-all policy alone therefore isolates nothing in a tenant namespace whose ``allow-same-namespace`` and
``allow-dns`` policies select every pod. So isolation has two halves:

* **The allow policies never select a quarantined pod.** Their ``podSelector`` carries
  ``{key: provisioning-service/quarantined, operator: DoesNotExist}`` (:data:`NOT_QUARANTINED`, in the tenant's
  manifests; the quarantine also re-applies them, so a namespace provisioned before this rule gets it);
* **The quarantined pods carry that label and a deny-all policy selects them.** ``quarantine-<workload>``
  (:func:`quarantine_policy_name`) selects the workload's pods by the workload's own ``spec.selector``
  (read from its Deployment, else its StatefulSet), ``policyTypes: [Ingress, Egress]`` and no rules. The label
  goes on the pods running now (isolated at once) *and* on the pod template (pods created later are born
  isolated: a restart, a reschedule or the rollout cannot let one escape).

The trade-off: the label on the pod template is a template change, so the Deployment (or a StatefulSet with
``RollingUpdate``) rolls its pods once on quarantine and once on release. For a workload quarantined for a
critical anomaly a restart is acceptable, and the replicas stay held at the policy floor by the scaling engine.
The alternatives were worse: excluding each quarantined workload from the allow policies by negating its
selector (``NotIn``) cannot express the negation of a selector of several terms in one policy, and grows a
cross product of policies per quarantined workload; labelling only the running pods lets every pod created
later (a crash, a node drain) out of quarantine. Traffic *to* a quarantined pod from a peer is refused by the
quarantined pod's own (empty) ingress rules, and traffic *from* it by its (empty) egress rules, so the peers'
policies need no change.

Order, so that a crash at any point leaves the workload isolated or the command's retry finishes the job
(every step is idempotent): quarantine re-applies the allow policies, applies the deny-all policy, labels the
template, then the running pods (after the template, so a pod the old ReplicaSet creates meanwhile is listed).
Release undoes it the other way round: the template, the pods, then the policy last (404: already gone), so
that an interrupted release still leaves the pods denied.

Known limits: the tenant's owner holds the ``admin`` ClusterRole in the namespace and could remove the label
or the policy (the quarantine's scaling hold and compute refusal stay); a pod created by the old ReplicaSet
between the template patch and the pod listing keeps no label until the next quarantine command for the
workload (another critical anomaly) re-applies it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, Protocol, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

#: The label of a quarantined workload's pods (on its template and on its running pods).
QUARANTINE_LABEL = "provisioning-service/quarantined"
#: The label of the deny-all policies this module makes (and the annotation naming the workload).
POLICY_LABEL = "provisioning-service/quarantine"
WORKLOAD_ANNOTATION = "provisioning-service/workload"
#: The allow policies' pod selector term: pods not quarantined.
NOT_QUARANTINED: dict[str, str] = {"key": QUARANTINE_LABEL, "operator": "DoesNotExist"}

_POLICY_PREFIX = "quarantine-"
_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?", re.ASCII)
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*", re.ASCII)
_HASH_CHARS = 10


def is_workload_name(name: str) -> bool:
    """Whether ``name`` can name a Deployment or StatefulSet (a DNS-1123 subdomain, at most 253 characters)."""
    return 0 < len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name) is not None


def quarantine_policy_name(workload: str) -> str:
    """The deny-all policy's name: ``quarantine-<workload>`` when that is a DNS-1123 label (at most 63
    characters, no dots); otherwise a readable prefix of the workload and a hash of the whole name, so that
    names stay deterministic and distinct workloads get distinct policies."""
    plain = _POLICY_PREFIX + workload
    if len(plain) <= 63 and _DNS1123_LABEL.fullmatch(plain):
        return plain
    digest = hashlib.sha256(workload.encode()).hexdigest()[:_HASH_CHARS]
    room = 63 - len(_POLICY_PREFIX) - 1 - _HASH_CHARS
    readable = re.sub(r"[^a-z0-9-]+", "-", workload.lower())[:room].strip("-")
    return f"{_POLICY_PREFIX}{readable}-{digest}" if readable else f"{_POLICY_PREFIX}{digest}"


def quarantine_policy_manifest(namespace: str, workload: str, selector: dict[str, Any],
                               labels: dict[str, str]) -> dict[str, Any]:
    """The deny-all NetworkPolicy of a quarantined workload: its pods (``selector``, the workload's own), no
    ingress and no egress rule."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": quarantine_policy_name(workload),
            "namespace": namespace,
            "labels": {**labels, POLICY_LABEL: "true"},
            "annotations": {WORKLOAD_ANNOTATION: workload},
        },
        "spec": {"podSelector": pod_selector(selector), "policyTypes": ["Ingress", "Egress"]},
    }


def pod_selector(selector: dict[str, Any]) -> dict[str, Any]:
    """A workload's ``spec.selector`` (camelCase, as the server returns it) as a policy's ``podSelector``:
    only ``matchLabels`` and ``matchExpressions``; ValueError when it would select every pod."""
    out: dict[str, Any] = {}
    if selector.get("matchLabels"):
        out["matchLabels"] = dict(selector["matchLabels"])
    if selector.get("matchExpressions"):
        out["matchExpressions"] = [
            {"key": e["key"], "operator": e["operator"], **({"values": list(e["values"])} if e.get("values") else {})}
            for e in selector["matchExpressions"]
        ]
    if not out:
        raise ValueError("the workload's selector is empty (it would select every pod of the namespace)")
    return out


def selector_string(selector: dict[str, Any]) -> str:
    """A label selector (``matchLabels``/``matchExpressions``) in the list call's ``labelSelector`` syntax."""
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise ValueError(f"unknown selector operator {operator!r}")
    return ",".join(terms)


def template_label_patch(quarantined: bool) -> dict[str, Any]:
    """A merge patch setting (or removing: ``null``) the quarantine label on a workload's pod template."""
    return {"spec": {"template": {"metadata": {"labels": {QUARANTINE_LABEL: "true" if quarantined else None}}}}}


def pod_label_patch(quarantined: bool) -> dict[str, Any]:
    """A merge patch setting (or removing) the quarantine label on one pod."""
    return {"metadata": {"labels": {QUARANTINE_LABEL: "true" if quarantined else None}}}


class WorkloadApi(Protocol):
    """The calls isolation makes, implemented by the Kubernetes provisioner (blocking: run in a thread)."""

    def read_workload(self, namespace: str, name: str) -> tuple[str, dict[str, Any]] | None: ...

    def patch_workload(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None: ...

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...

    def ensure(self, manifest: dict[str, Any]) -> str: ...

    def delete_policy(self, namespace: str, name: str) -> bool: ...


def isolate(api: WorkloadApi, namespace: str, workload: str, allow_policies: list[dict[str, Any]],
            labels: dict[str, str]) -> dict[str, Any]:
    """Quarantine ``workload``'s pods (see the module's order); raises LookupError when the namespace holds no
    Deployment or StatefulSet of that name, ValueError when its selector is empty."""
    found = api.read_workload(namespace, workload)
    if found is None:
        raise LookupError(f"no Deployment or StatefulSet {workload!r} in namespace {namespace}")
    kind, obj = found
    selector = obj.get("spec", {}).get("selector") or {}
    policy = quarantine_policy_manifest(namespace, workload, selector, labels)
    for manifest in allow_policies:
        api.ensure(manifest)
    done = api.ensure(policy)
    template_labels = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    if template_labels.get(QUARANTINE_LABEL) != "true":
        api.patch_workload(kind, namespace, workload, template_label_patch(True))
    labelled = 0
    for pod in api.list_pods(namespace, selector_string(policy["spec"]["podSelector"])):
        metadata = pod.get("metadata", {})
        if (metadata.get("labels") or {}).get(QUARANTINE_LABEL) != "true":
            api.patch_pod(namespace, metadata["name"], pod_label_patch(True))
            labelled += 1
    return {"workload": workload, "kind": kind, "network_policy": policy["metadata"]["name"], "policy": done,
            "pods_labelled": labelled}


def release(api: WorkloadApi, namespace: str, workload: str) -> dict[str, Any]:
    """End ``workload``'s isolation: the template's label, the pods' labels, then the deny-all policy. A
    workload (or policy) already gone is not an error: a redelivered release does nothing more."""
    found = api.read_workload(namespace, workload)
    unlabelled = 0
    if found is not None:
        kind, obj = found
        template_labels = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
        if QUARANTINE_LABEL in template_labels:
            api.patch_workload(kind, namespace, workload, template_label_patch(False))
        selector = obj.get("spec", {}).get("selector") or {}
        try:
            terms = selector_string(pod_selector(selector))
        except ValueError:
            terms = ""
        if terms:
            for pod in api.list_pods(namespace, f"{terms},{QUARANTINE_LABEL}"):
                api.patch_pod(namespace, pod["metadata"]["name"], pod_label_patch(False))
                unlabelled += 1
    deleted = api.delete_policy(namespace, quarantine_policy_name(workload))
    return {"workload": workload, "network_policy": quarantine_policy_name(workload), "policy_deleted": deleted,
            "pods_unlabelled": unlabelled, "workload_found": found is not None}


class KubeWorkloads:
    """:class:`WorkloadApi` over the Kubernetes client (``client`` returns the provisioner's ``ApiClient``,
    ``ensure`` is its create-or-replace). Blocking."""

    def __init__(self, client: Callable[[], k8s.ApiClient], ensure: Callable[[dict[str, Any]], str],
                 timeout: tuple[float, float]) -> None:
        self._client = client
        self._ensure = ensure
        self._timeout = timeout

    def ensure(self, manifest: dict[str, Any]) -> str:
        return self._ensure(manifest)

    def _plain(self, obj: object) -> dict[str, Any]:
        return cast(dict[str, Any], self._client().sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def read_workload(self, namespace: str, name: str) -> tuple[str, dict[str, Any]] | None:
        apps = k8s.AppsV1Api(self._client())
        for kind, read in (("Deployment", apps.read_namespaced_deployment),
                           ("StatefulSet", apps.read_namespaced_stateful_set)):
            try:
                return kind, self._plain(read(name, namespace, _request_timeout=self._timeout))
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return None

    def patch_workload(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        apps = k8s.AppsV1Api(self._client())
        call = apps.patch_namespaced_deployment if kind == "Deployment" else apps.patch_namespaced_stateful_set
        call(name, namespace, patch, _request_timeout=self._timeout)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        pods = k8s.CoreV1Api(self._client()).list_namespaced_pod(
            namespace, label_selector=label_selector, _request_timeout=self._timeout)
        items: list[dict[str, Any]] = self._plain(pods).get("items", [])
        return items

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        try:
            k8s.CoreV1Api(self._client()).patch_namespaced_pod(name, namespace, patch,
                                                               _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:  # the pod went away meanwhile: nothing left to label
                raise

    def delete_policy(self, namespace: str, name: str) -> bool:
        try:
            k8s.NetworkingV1Api(self._client()).delete_namespaced_network_policy(
                name, namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:  # already gone (a redelivered release)
                return False
            raise
        return True
