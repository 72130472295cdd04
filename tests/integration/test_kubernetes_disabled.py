"""A worker without Kubernetes (KUBERNETES_ENABLED=false and no kubeconfig, as compose.yaml runs it), end to end:
events on Pulsar, the executor on, the six other real backends. It says once why Kubernetes is off, a tenant
becomes ``ready`` with its ``kubernetes`` resource ``skipped`` (the reason in the status and on
``provisioning-events``), nothing is created in the cluster, and the tenant is deleted all the same.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.base import StackContext
from devstack.harness.tenant_provisioning import (
    Api,
    Backends,
    EventPlane,
    Publisher,
    executor_env,
    read_topic,
    settings_from,
    tenant_created,
    tenant_deleted,
)
from devstack.harness.worker import WorkerProcess, free_port, poll
from devstack.process import log_tail
from pipeline.config import KUBERNETES_DISABLED_REASON
from pipeline.provisioners.base import RESOURCES, TenantSpec
from pipeline.provisioners.registry import aclose_all, build_provisioners
from tests.integration.conftest import JWT_SECRET

pytestmark = pytest.mark.integration

TIMEOUT = 180.0
OTHERS = [r for r in RESOURCES if r != "kubernetes"]


@pytest.fixture(scope="module")
def backends_env(
    cassandra_service: dict[str, str], s3_service: dict[str, str], pulsar_service: dict[str, str],
    openproject_service: dict[str, str], ignite_service: dict[str, str], elasticsearch_service: dict[str, str],
) -> dict[str, str]:
    """Every backend but Kubernetes (no KUBECONFIG among them)."""
    return {**cassandra_service, **s3_service, **pulsar_service, **openproject_service, **ignite_service,
            **elasticsearch_service}


@pytest.fixture(scope="module")
def plane(stack_ctx: StackContext, pulsar_service: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventPlane]:
    started = EventPlane.start(stack_ctx.cache_dir, tmp_path_factory.mktemp("event-plane"), pulsar_service)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def tenant(backends_env: dict[str, str]) -> Iterator[TenantSpec]:
    spec = TenantSpec(tenant_id=f"e2e-{secrets.token_hex(3)}-nok8s", name="x", tier="standard")
    yield spec

    async def purge() -> None:  # whatever the test left, directly through the six provisioners
        provisioners = build_provisioners(settings_from(backends_env), only=OTHERS)
        try:
            for resource in reversed(OTHERS):
                await provisioners[resource].delete(spec, purge=True)
        finally:
            await aclose_all(provisioners)

    asyncio.run(purge())


@pytest.fixture(scope="module")
def worker(plane: EventPlane, backends_env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = executor_env(backends_env, plane, JWT_SECRET, KUBERNETES_ENABLED="false", RECONCILE_INTERVAL_SECONDS="3",
                       EXECUTOR_BASE_DELAY_SECONDS="0.2", EXECUTOR_MAX_DELAY_SECONDS="2")
    home = tmp_path_factory.mktemp("worker")
    process = WorkerProcess(env, free_port(), home / "data", home / "worker.log")
    process.env.pop("KUBECONFIG", None)  # not even one inherited from the calling shell
    process.start()
    try:
        process.wait_ready(timeout=300)
        yield process
    finally:
        process.stop()


def wait_for(check: Any, what: str, worker: WorkerProcess, api: Api, tenant_id: str) -> Any:
    value = poll(check, TIMEOUT, interval=0.3)
    if value:
        return value
    pytest.fail(f"timed out after {TIMEOUT:.0f}s waiting for {what}\nstatus: {api.status(tenant_id)}\n"
                f"worker log:\n{log_tail(worker.log_path, 80)}", pytrace=False)


def test_a_tenant_is_provisioned_and_deleted_with_kubernetes_skipped(
    worker: WorkerProcess, plane: EventPlane, admin_token: str, tenant: TenantSpec,
    kubernetes_service: dict[str, str],
) -> None:
    api = Api(worker.url, admin_token)
    tenant_id = tenant.tenant_id
    publisher = Publisher(plane)
    try:
        publisher.send("tenant-created-events", tenant_created(tenant_id))

        def ready() -> dict[str, Any] | None:
            status = api.status(tenant_id)
            return status if status and set(status["resources"]) == set(RESOURCES) \
                and status["overall"] == "ready" else None

        status = wait_for(ready, "the tenant ready", worker, api, tenant_id)
        kubernetes = status["resources"]["kubernetes"]
        assert (kubernetes["status"], kubernetes["attempts"], kubernetes["last_error"]) == ("skipped", 0, None)
        assert kubernetes["detail"] == {"reason": KUBERNETES_DISABLED_REASON}
        assert {r: status["resources"][r]["status"] for r in OTHERS} == dict.fromkeys(OTHERS, "ready")

        # Nothing was created in the cluster (asked of the local kube-apiserver the worker was not given).
        namespace = tenant.names().kubernetes_namespace
        cluster = Backends(settings_from(kubernetes_service))
        try:
            assert cluster.namespace(namespace) is None
        finally:
            cluster.close()

        def kubernetes_events(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [e for e in found if e.get("tenant_id") == tenant_id and e.get("resource") == "kubernetes"]

        events = kubernetes_events(read_topic(plane.bootstrap, "provisioning-events", lambda found: any(
            e["status"] == "skipped" for e in kubernetes_events(found)), 30.0))
        assert [(e["status"], e["previous_status"], e["detail"]) for e in events] == [
            ("pending", None, {}), ("skipped", "pending", {"reason": KUBERNETES_DISABLED_REASON})]

        publisher.send("tenant-deleted-events", tenant_deleted(tenant_id, purge=True))

        def deleted() -> dict[str, Any] | None:
            status = api.status(tenant_id)
            return status if status and status["overall"] == "deleted" else None

        status = wait_for(deleted, "the tenant deleted", worker, api, tenant_id)
        assert status["resources"]["kubernetes"]["status"] == "skipped"
        assert api.call("GET", f"/tenants/{tenant_id}")[0] == 404
    finally:
        publisher.close()

    # One line says why, however many commands were skipped.
    log = worker.log_path.read_text(errors="replace")
    assert log.count("Kubernetes disabled (KUBERNETES_ENABLED=false)") == 1, log_tail(worker.log_path, 80)
