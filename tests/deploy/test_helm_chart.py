"""deploy/helm/provisioning-service: helm lints it and renders it with the default and the production example
values, and the local kube-apiserver accepts every rendered object in a server-side dry run (so the API server,
not a schema copy, validates each). helm is built from the Go module proxy (devstack/helm.py)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from devstack.base import StackContext
from devstack.errors import DevstackError
from devstack.helm import helm_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "provisioning-service"
VALUES: dict[str, list[str]] = {
    "default": ["--set", "existingSecret=provisioning-service-secrets"],
    "production": ["-f", str(CHART / "values-production.example.yaml")],
}
#: Kinds of the Prometheus Operator: the local API server has no CRDs for them (checked by shape only).
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.fixture(scope="module")
def helm(stack_ctx: StackContext, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    try:
        binary = helm_binary(stack_ctx)
    except DevstackError as exc:
        pytest.fail(f"cannot build helm: {exc}", pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    env = {"HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    yield binary, env


def run(helm: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    binary, env = helm
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, env=env, check=False)


def render(helm: tuple[Path, dict[str, str]], values: list[str], namespace: str = "platform") -> list[dict[str, Any]]:
    done = run(helm, "template", "provisioning", str(CHART), "--namespace", namespace, *values)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_passes(helm: tuple[Path, dict[str, str]], values: str) -> None:
    done = run(helm, "lint", "--strict", str(CHART), *VALUES[values])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_chart_refuses_to_render_without_a_secret_or_with_a_secret_in_the_config(
    helm: tuple[Path, dict[str, str]]
) -> None:
    missing = run(helm, "template", "provisioning", str(CHART))
    assert missing.returncode != 0 and "existingSecret is required" in missing.stderr
    leaked = run(helm, "template", "provisioning", str(CHART), *VALUES["default"], "--set", "config.PEER_SECRET=x")
    assert leaked.returncode != 0 and "values don't meet the specifications of the schema" in leaked.stderr
    for secret in ("CASSANDRA_PASSWORD", "ELASTICSEARCH_PASSWORD"):  # the backends' passwords stay in the Secret
        refused = run(helm, "template", "provisioning", str(CHART), *VALUES["default"], "--set", f"config.{secret}=x")
        assert refused.returncode != 0 and "specifications of the schema" in refused.stderr, secret
    wrong = run(helm, "template", "provisioning", str(CHART), *VALUES["default"], "--set", "replicas=0")
    assert wrong.returncode != 0


def test_what_each_values_file_renders(helm: tuple[Path, dict[str, str]]) -> None:
    default = {doc["kind"] for doc in render(helm, VALUES["default"])}
    assert default == {"ConfigMap", "StatefulSet", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                       "PodDisruptionBudget"}
    production = render(helm, VALUES["production"])
    assert {doc["kind"] for doc in production} == default | OPERATOR_KINDS
    for doc in production:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "provisioning-service"
        assert labels["app.kubernetes.io/instance"] == "provisioning"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    [rule] = [doc for doc in production if doc["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    [sts] = [doc for doc in production if doc["kind"] == "StatefulSet"]
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WEB_ADVERTISED_URL"]["value"].startswith("http://$(POD_NAME).provisioning-provisioning-service-peers.")
    assert "0.0.0.0" not in env["WEB_ADVERTISED_URL"]["value"]  # noqa: S104 - checking, not binding
    assert env["KAFKA_GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"


def test_the_chart_carries_the_repositorys_rules_and_dashboard_unchanged() -> None:
    assert (CHART / "files" / "alerts.yml").read_bytes() == (REPO / "deploy/prometheus/alerts.yml").read_bytes()
    assert (CHART / "files" / "provisioning-overview.json").read_bytes() == (
        REPO / "deploy/grafana/dashboards/provisioning-overview.json").read_bytes()


@pytest.fixture
def cluster(kubernetes_service: dict[str, str]) -> Iterator[tuple[DynamicClient, str]]:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubernetes_service["KUBECONFIG"]
    )
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        yield DynamicClient(api), namespace
    finally:
        core.delete_namespace(namespace)
        api.close()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_the_api_server_accepts_every_rendered_object(
    helm: tuple[Path, dict[str, str]], cluster: tuple[DynamicClient, str], values: str
) -> None:
    dynamic, namespace = cluster
    checked = []
    for doc in render(helm, VALUES[values], namespace):
        if doc["kind"] in OPERATOR_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["spec"]
            continue
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        where = {"namespace": namespace} if resource.namespaced else {}
        created = resource.create(body=doc, dry_run="All", **where)  # validated and admitted, not stored
        assert created.metadata.name == doc["metadata"]["name"]
        checked.append(doc["kind"])
    assert "StatefulSet" in checked and "ClusterRole" in checked
