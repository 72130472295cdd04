"""Against the local kube-apiserver: a Pod left by a worker that died is found by its labels by a fresh
provider (nothing in memory) and deleted by the orphan sweep; a Pod a live record still wants is kept."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from pipeline.compute.access import AccessSecrets
from pipeline.compute.allocation import AllocationIntent, allocation_token
from pipeline.compute.backend import BackendRouter
from pipeline.compute.catalog import OfferBook
from pipeline.compute.kubernetes_provider import KubernetesComputeProvider, KubernetesProviderConfig, KubernetesShape
from pipeline.compute.lifecycle import ComputeRecord, ComputeState, transition
from pipeline.compute.request import ComputeRequest
from pipeline.compute.service import ComputeService

CONFIG = KubernetesProviderConfig(shapes=[KubernetesShape(name="cpu-2", vcpus=2, memory_gib=4, capacity=4)])
NOW = datetime.now(UTC)


@pytest.fixture
def core(kubernetes_service: dict[str, str]) -> Iterator[k8s.CoreV1Api]:
    api_client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(Path(kubernetes_service["KUBECONFIG"])), persist_config=False
    )
    yield k8s.CoreV1Api(api_client)
    api_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def tenant(core: k8s.CoreV1Api) -> Iterator[str]:
    tenant_id = f"crash-{secrets.token_hex(4)}"
    namespace = f"tenant-{tenant_id}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    try:  # a bare API server runs no controller that would make it
        account = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default"))
        core.create_namespaced_service_account(namespace, account)
    except ApiException as exc:
        if exc.status != 409:
            raise
    yield tenant_id
    core.delete_namespace(namespace)


def request_of(tenant_id: str) -> ComputeRequest:
    return ComputeRequest.model_validate({"tenant_id": tenant_id, "resources": {"vcpus": 1, "memory_gib": 1},
                                          "duration_hours": 1})


def pod_exists(core: k8s.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return pod.metadata is not None and pod.metadata.deletion_timestamp is None


async def test_a_fresh_provider_finds_the_orphan_pod_by_label_and_the_sweep_deletes_it(
    kubernetes_service: dict[str, str], core: k8s.CoreV1Api, tenant: str
) -> None:
    kubeconfig = kubernetes_service["KUBECONFIG"]
    offer = CONFIG.offers()[0]
    orphan_id, live_id = f"{tenant}.orphan", f"{tenant}.live"
    orphan_token = allocation_token(orphan_id, 1, offer.provider, offer.offer_id)
    live_token = allocation_token(live_id, 1, offer.provider, offer.offer_id)
    dying = KubernetesComputeProvider(CONFIG, kubeconfig=kubeconfig)
    for token in (orphan_token, live_token):
        await dying.allocate(offer, request_of(tenant), client_token=token, setup=AccessSecrets.generate().setup())
    namespace = f"tenant-{tenant}"
    assert pod_exists(core, namespace, f"compute-{orphan_token}")
    del dying  # the worker is gone, and with it everything it knew

    # What the table holds after the restart: the orphan's request finished (its intent never settled: the
    # worker died first), the other one still allocating with its intent recorded.
    def intent(token: str) -> AllocationIntent:
        return AllocationIntent(attempt=1, client_token=token, provider=offer.provider, offer_id=offer.offer_id,
                                at=NOW)

    finished = transition(ComputeRecord.new(orphan_id, request_of(tenant), NOW), ComputeState.FAILED, NOW,
                          reason="abandoned")
    live = transition(ComputeRecord.new(live_id, request_of(tenant), NOW), ComputeState.ALLOCATING, NOW,
                      intents=[intent(live_token)])
    store = {orphan_id: finished, live_id: live}
    fresh = KubernetesComputeProvider(CONFIG, kubeconfig=kubeconfig)
    service = ComputeService(book=OfferBook(CONFIG.offers()), backends=BackendRouter(fresh, {"kubernetes": fresh}),
                             store=store, clock=lambda: NOW)
    assert {a.client_token for a in await fresh.list_allocations() if a.tenant_id == tenant} == {
        orphan_token, live_token}

    assert await service.release_orphans("kubernetes", fresh, NOW, grace_s=3600) == []  # too young yet
    later = NOW + timedelta(hours=2)
    assert await service.release_orphans("kubernetes", fresh, later, grace_s=3600) == [orphan_token]
    assert not pod_exists(core, namespace, f"compute-{orphan_token}")
    assert pod_exists(core, namespace, f"compute-{live_token}")  # its request still wants it
    assert await service.release_orphans("kubernetes", fresh, later, grace_s=3600) == []

    # Recovery of the allocating request (its worker is gone): released by its recorded token.
    failed = await service.fail_abandoned(live_id)
    assert failed.state is ComputeState.FAILED
    assert not pod_exists(core, namespace, f"compute-{live_token}")
    assert [a for a in await fresh.list_allocations() if a.tenant_id == tenant] == []
