"""The stack's real kube-apiserver (over its etcd) stores what tenant provisioning creates.

There is no controller-manager: quotas get no computed status and nothing rolls out, but every
object below is validated, admitted, stored and read back by the real API server, and RBAC is real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

pytestmark = pytest.mark.integration


_SERIALIZER = client.ApiClient()


def plain(obj: object) -> dict[str, Any]:
    """A client model as the JSON the server returned (camelCase keys), for plain comparisons."""
    data: dict[str, Any] = _SERIALIZER.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return data


@pytest.fixture
def api_client(kubernetes_service: dict[str, str]) -> Iterator[client.ApiClient]:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubernetes_service["KUBECONFIG"]
    )
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = f"tenant-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"tenant": name})))
    yield name
    # Without a controller-manager the namespace stays Terminating; its name is never reused.
    core.delete_namespace(name)


def test_version_is_the_published_release(api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.")
    assert info.major == "1"


def test_system_namespaces_exist(api_client: client.ApiClient) -> None:
    names = {ns["metadata"]["name"] for ns in plain(client.CoreV1Api(api_client).list_namespace())["items"]}
    assert {"default", "kube-system", "kube-public"} <= names


def test_tenant_objects_round_trip(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    networking = client.NetworkingV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)

    core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="tenant-quota"),
            spec=client.V1ResourceQuotaSpec(
                hard={"requests.cpu": "2", "requests.memory": "4Gi", "limits.cpu": "4", "pods": "20"}
            ),
        ),
    )
    quota = plain(core.read_namespaced_resource_quota("tenant-quota", namespace))
    assert quota["spec"]["hard"] == {"requests.cpu": "2", "requests.memory": "4Gi", "limits.cpu": "4", "pods": "20"}

    core.create_namespaced_limit_range(
        namespace,
        client.V1LimitRange(
            metadata=client.V1ObjectMeta(name="tenant-limits"),
            spec=client.V1LimitRangeSpec(
                limits=[
                    client.V1LimitRangeItem(
                        type="Container",
                        default={"cpu": "500m", "memory": "512Mi"},
                        default_request={"cpu": "100m", "memory": "128Mi"},
                    )
                ]
            ),
        ),
    )
    (limit,) = plain(core.read_namespaced_limit_range("tenant-limits", namespace))["spec"]["limits"]
    assert limit["default"] == {"cpu": "500m", "memory": "512Mi"}
    assert limit["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}

    networking.create_namespaced_network_policy(
        namespace,
        client.V1NetworkPolicy(
            metadata=client.V1ObjectMeta(name="default-deny"),
            spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(), policy_types=["Ingress", "Egress"]),
        ),
    )
    policy = plain(networking.read_namespaced_network_policy("default-deny", namespace))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"] == {}
    assert not policy["spec"].get("ingress")
    assert not policy["spec"].get("egress")

    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="tenant-admin"),
            rules=[client.V1PolicyRule(api_groups=["", "apps"], resources=["*"], verbs=["*"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="tenant-admin"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="tenant-admin"),
            subjects=[
                client.RbacV1Subject(kind="User", name=f"{namespace}-admin", api_group="rbac.authorization.k8s.io")
            ],
        ),
    )
    binding = plain(rbac.read_namespaced_role_binding("tenant-admin", namespace))
    assert [s["name"] for s in binding["subjects"]] == [f"{namespace}-admin"]
    assert binding["roleRef"]["name"] == "tenant-admin"


def test_rbac_is_enforced(api_client: client.ApiClient, namespace: str) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    user = f"{namespace}-admin"
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="reader"),
            subjects=[client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")],
        ),
    )
    authz = client.AuthorizationV1Api(api_client)

    def allowed(target_namespace: str, verb: str) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=target_namespace, verb=verb, resource="configmaps"
                ),
            )
        )
        return bool(plain(authz.create_subject_access_review(review))["status"].get("allowed"))

    assert allowed(namespace, "get")
    assert not allowed(namespace, "delete")
    assert not allowed("kube-system", "get")


def test_deployment_scale_subresource(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    labels = {"app": "worker"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="worker"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="worker", image="busybox:1.36")]),
                ),
            ),
        ),
    )
    apps.patch_namespaced_deployment_scale("worker", namespace, {"spec": {"replicas": 3}})
    assert plain(apps.read_namespaced_deployment_scale("worker", namespace))["spec"]["replicas"] == 3
    assert plain(apps.read_namespaced_deployment("worker", namespace))["spec"]["replicas"] == 3
