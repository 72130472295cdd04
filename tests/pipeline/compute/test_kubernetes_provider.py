"""Pure parts of the in-house Kubernetes provider, and its logic over an in-memory fake of CoreV1Api.

NOTE: the integration test against the real kube-apiserver (create/delete the Pod in the tenant's
namespace) is to be added when that API server exists (marked ``integration``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client as k8s

from pipeline.compute.access import AccessSecrets
from pipeline.compute.backend import AllocationRefused, AllocationState, BackendUnavailable, InvalidRequest
from pipeline.compute.kubernetes_provider import (
    KubernetesComputeProvider,
    KubernetesProviderConfig,
    KubernetesShape,
    UnsafeName,
    build_pod_manifest,
    build_secret_manifest,
    pod_name,
    state_of_pod,
    tenant_namespace,
)
from pipeline.compute.optimizer import choose
from pipeline.compute.request import ComputeRequest

CONFIG = KubernetesProviderConfig(
    price_per_gpu_hour={"H100": 2.0},
    price_per_vcpu_hour=0.01,
    price_per_gib_hour=0.001,
    gpu_products={"H100": "NVIDIA-H100-80GB-HBM3"},
    shapes=[
        KubernetesShape(name="h100-x4", gpu_name="H100", gpu_count=4, vcpus=64, memory_gib=512, capacity=2),
        KubernetesShape(name="cpu-16", vcpus=16, memory_gib=64, capacity=10),
    ],
)
REQUEST = ComputeRequest.model_validate(
    {"tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": 4}, "vcpus": 8, "memory_gib": 64.5,
                                         "storage_gib": 100}, "duration_hours": 1.5}
)
TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("tenant", ["acme", "team-42", "a", "x" * 56])
def test_safe_tenant_namespaces(tenant: str) -> None:
    assert tenant_namespace(tenant) == f"tenant-{tenant}"


@pytest.mark.parametrize(
    "tenant", ["Acme", "team_42", "-acme", "acme-", "a.b", "", "x" * 57, "acme/../kube-system", "acme\n", "ács"]
)
def test_unsafe_tenant_ids_are_refused(tenant: str) -> None:
    with pytest.raises(UnsafeName):
        tenant_namespace(tenant)


def test_pod_name_is_deterministic_and_safe() -> None:
    assert pod_name(TOKEN) == f"compute-{TOKEN}"
    assert pod_name("r1-" + TOKEN) == pod_name("r1-" + TOKEN)
    with pytest.raises(UnsafeName):
        pod_name("bad_token!")


def test_offers_are_priced_from_configuration() -> None:
    offers = {o.instance_type: o for o in CONFIG.offers()}
    gpu = offers["h100-x4"]
    assert gpu.price_per_hour == pytest.approx(4 * 2.0 + 64 * 0.01 + 512 * 0.001)
    assert (gpu.provider, gpu.region, gpu.gpu_count, gpu.capacity, gpu.source) == ("kubernetes", "in-house", 4, 2,
                                                                                      "kubernetes")
    assert offers["cpu-16"].gpu_name is None
    assert choose(REQUEST, CONFIG.offers()).chosen.instance_type == "h100-x4"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        KubernetesProviderConfig(shapes=[KubernetesShape(name="a100", gpu_name="A100", gpu_count=1, vcpus=1,
                                                         memory_gib=1)]).offers()


def test_pod_manifest() -> None:
    offer = CONFIG.offers()[0]
    pod = build_pod_manifest(
        CONFIG, request=REQUEST, offer=offer, client_token=TOKEN, ssh_public_key="ssh-ed25519 AAA x"
    )
    assert pod["metadata"]["namespace"] == "tenant-acme"
    assert pod["metadata"]["name"] == f"compute-{TOKEN}"
    assert pod["metadata"]["labels"]["compute.platform/tenant"] == "acme"
    container = pod["spec"]["containers"][0]
    expected = {"cpu": "8000m", "memory": "66048Mi", "ephemeral-storage": "100Gi", "nvidia.com/gpu": "4"}
    assert container["resources"] == {"requests": expected, "limits": expected}
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["spec"]["activeDeadlineSeconds"] == 5400
    assert pod["spec"]["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["SSH_AUTHORIZED_KEYS"]["value"] == "ssh-ed25519 AAA x"
    assert env["JUPYTER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == f"compute-{TOKEN}-access"
    # the installed official client (pydantic models) parses it as a V1Pod
    model: Any = k8s.V1Pod.from_dict(pod)
    assert model.spec.containers[0].resources.limits["nvidia.com/gpu"] == "4"
    cpu_only = REQUEST.model_copy(update={"resources": REQUEST.resources.model_copy(update={"gpu": None})})
    cpu_pod = build_pod_manifest(CONFIG, request=cpu_only, offer=CONFIG.offers()[1], client_token=TOKEN,
                                 ssh_public_key="k")
    assert "nvidia.com/gpu" not in cpu_pod["spec"]["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in cpu_pod["spec"] and "tolerations" not in cpu_pod["spec"]


def test_secret_manifest_holds_the_token_not_the_pod() -> None:
    secret = build_secret_manifest(CONFIG, tenant_id="acme", client_token=TOKEN, jupyter_token="s3cr3t-token")
    assert secret["stringData"] == {"jupyter-token": "s3cr3t-token"}
    pod = build_pod_manifest(CONFIG, request=REQUEST, offer=CONFIG.offers()[0], client_token=TOKEN, ssh_public_key="k")
    assert "s3cr3t-token" not in str(pod)


def test_phase_mapping() -> None:
    assert state_of_pod("Pending", False) is AllocationState.PROVISIONING
    assert state_of_pod("Running", False) is AllocationState.PROVISIONING
    assert state_of_pod("Running", True) is AllocationState.RUNNING
    assert state_of_pod("Failed", False) is AllocationState.FAILED
    assert state_of_pod("Running", True, deleting=True) is AllocationState.RELEASED


class ApiError(Exception):
    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason, self.body = status, reason, body


class FakeCoreV1:
    """In-memory stand-in of the CoreV1Api methods the provider uses (NOT the real API server)."""

    def __init__(self, namespaces: set[str]) -> None:
        self.namespaces = namespaces
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_create: ApiError | None = None

    def _create(self, store: dict[tuple[str, str], dict[str, Any]], namespace: str, body: dict[str, Any]) -> None:
        if self.fail_create is not None:
            raise self.fail_create
        if namespace not in self.namespaces:
            raise ApiError(404, "Not Found", "namespace not found")
        key = (namespace, body["metadata"]["name"])
        if key in store:
            raise ApiError(409, "AlreadyExists")
        store[key] = body

    def create_namespaced_pod(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self._create(self.pods, namespace, body)

    def create_namespaced_secret(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self._create(self.secrets, namespace, body)

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Any:
        body = self.pods.get((namespace, name))
        if body is None:
            raise ApiError(404, "Not Found")
        meta = body["metadata"]
        return SimpleNamespace(
            metadata=SimpleNamespace(name=name, namespace=namespace, labels=meta["labels"],
                                     annotations=meta["annotations"], deletion_timestamp=None),
            status=SimpleNamespace(phase="Running", pod_ip="10.0.0.7", message=None,
                                   conditions=[SimpleNamespace(type="Ready", status="True")]),
        )

    @staticmethod
    def _listed(store: dict[tuple[str, str], dict[str, Any]], label_selector: str) -> Any:
        wanted = dict(term.split("=", 1) for term in label_selector.split(","))
        items = [
            SimpleNamespace(metadata=SimpleNamespace(namespace=ns, name=name, labels=body["metadata"]["labels"],
                                                     creation_timestamp=None))
            for (ns, name), body in store.items()
            if all(body["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        return SimpleNamespace(items=items)

    def list_pod_for_all_namespaces(self, *, label_selector: str, **_: Any) -> Any:
        return self._listed(self.pods, label_selector)

    def list_secret_for_all_namespaces(self, *, label_selector: str, **_: Any) -> Any:
        return self._listed(self.secrets, label_selector)

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        if self.pods.pop((namespace, name), None) is None:
            raise ApiError(404, "Not Found")

    def delete_namespaced_secret(self, name: str, namespace: str, **_: Any) -> None:
        if self.secrets.pop((namespace, name), None) is None:
            raise ApiError(404, "Not Found")


async def test_provider_allocate_status_release_over_a_fake_api() -> None:
    api = FakeCoreV1({"tenant-acme"})
    provider = KubernetesComputeProvider(CONFIG, api=api)
    offer = CONFIG.offers()[0]
    setup = AccessSecrets.generate().setup()
    handle = await provider.allocate(offer, REQUEST, client_token=TOKEN, setup=setup)
    assert handle.allocation_id == f"tenant-acme/compute-{TOKEN}"
    assert handle.state is AllocationState.RUNNING and handle.offer_id == offer.offer_id
    again = await provider.allocate(offer, REQUEST, client_token=TOKEN, setup=setup)  # idempotent
    assert again.allocation_id == handle.allocation_id and len(api.pods) == 1
    assert (await provider.status(handle.allocation_id)).host == "10.0.0.7"
    await provider.release_by_token(TOKEN)
    assert api.pods == {} and api.secrets == {}
    assert (await provider.status(handle.allocation_id)).state is AllocationState.RELEASED
    with pytest.raises(AllocationRefused):  # tombstoned token
        await provider.allocate(offer, REQUEST, client_token=TOKEN, setup=setup)


async def test_provider_errors_are_typed() -> None:
    api = FakeCoreV1(set())
    provider = KubernetesComputeProvider(CONFIG, api=api)
    offer = CONFIG.offers()[0]
    setup = AccessSecrets.generate().setup()
    with pytest.raises(AllocationRefused):  # no namespace for the tenant
        await provider.allocate(offer, REQUEST, client_token="a" * 32, setup=setup)
    api.fail_create = ApiError(503, "Service Unavailable")
    with pytest.raises(BackendUnavailable):
        await provider.allocate(offer, REQUEST, client_token="b" * 32, setup=setup)
    bad = REQUEST.model_copy(update={"tenant_id": "Bad_Tenant"})
    with pytest.raises(InvalidRequest):
        await provider.allocate(offer, bad, client_token="c" * 32, setup=setup)


async def test_a_fresh_provider_releases_by_token_what_another_instance_created() -> None:
    """After a restart nothing is in memory: the Pod and its Secret are found by their labels."""
    api = FakeCoreV1({"tenant-acme"})
    offer = CONFIG.offers()[0]
    await KubernetesComputeProvider(CONFIG, api=api).allocate(
        offer, REQUEST, client_token=TOKEN, setup=AccessSecrets.generate().setup()
    )
    other = "f" * 32
    await KubernetesComputeProvider(CONFIG, api=api).allocate(
        offer, REQUEST, client_token=other, setup=AccessSecrets.generate().setup()
    )
    del api.pods[("tenant-acme", f"compute-{other}")]  # killed between creating the Secret and the Pod
    fresh = KubernetesComputeProvider(CONFIG, api=api)
    listed = {a.client_token: a for a in await fresh.list_allocations()}
    assert set(listed) == {TOKEN, other} and listed[TOKEN].tenant_id == "acme"
    await fresh.release_by_token(TOKEN)
    await KubernetesComputeProvider(CONFIG, api=api).release_by_token(other)
    assert api.pods == {} and api.secrets == {}
    await KubernetesComputeProvider(CONFIG, api=api).release_by_token(TOKEN)  # idempotent
