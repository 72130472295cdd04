"""On the local kube-apiserver: a Deployment that an HPA already scales is read, but never scaled by the
service (its decision is advisory until the HPA goes); without one it is scaled."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from pipeline.provisioners.naming import names_for
from pipeline.scaling.kube import ApplyRequest, DeploymentScaler

pytestmark = pytest.mark.integration


@pytest.fixture
def tenant(kubernetes_service: dict[str, str]) -> Iterator[tuple[str, k8s.ApiClient]]:
    admin = k8s_config.new_client_from_config(config_file=kubernetes_service["KUBECONFIG"])
    tenant_id = f"hpa-{uuid.uuid4().hex[:8]}"
    namespace = names_for(tenant_id).kubernetes_namespace
    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    k8s.AppsV1Api(admin).create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}}, "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "registry.invalid/api:1"}]}}}})
    try:
        yield tenant_id, admin
    finally:
        k8s.CoreV1Api(admin).delete_namespace(namespace)


def replicas(admin: k8s.ApiClient, tenant_id: str) -> int:
    deployment = k8s.AppsV1Api(admin).read_namespaced_deployment("api", names_for(tenant_id).kubernetes_namespace)
    return int(deployment.spec.replicas)


def test_a_deployment_an_hpa_scales_is_not_scaled_until_the_hpa_goes(
    kubernetes_service: dict[str, str], tenant: tuple[str, k8s.ApiClient],
) -> None:
    tenant_id, admin = tenant
    namespace = names_for(tenant_id).kubernetes_namespace
    autoscaling = k8s.AutoscalingV2Api(admin)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "api-hpa"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                 "minReplicas": 1, "maxReplicas": 5}})
    scaler = DeploymentScaler(kubernetes_service["KUBECONFIG"])  # type: ignore[arg-type]
    try:
        refused = scaler.run(ApplyRequest(tenant_id, "api", 3))
        assert not refused.scaled and refused.error is not None and "HorizontalPodAutoscaler/api-hpa" in refused.error
        assert refused.observation is not None and refused.observation.scaled_by == "HorizontalPodAutoscaler/api-hpa"
        assert replicas(admin, tenant_id) == 1
        observed = scaler.run(ApplyRequest(tenant_id, "api", None))  # a read alone is no error
        assert observed.error is None and observed.observation is not None and observed.observation.scaled_by

        autoscaling.delete_namespaced_horizontal_pod_autoscaler("api-hpa", namespace)
        applied = scaler.run(ApplyRequest(tenant_id, "api", 3))
        assert applied.scaled and applied.error is None, applied
        assert replicas(admin, tenant_id) == 3
    finally:
        scaler.close()
