"""Compute provisioning end to end (issue 6): real worker processes, the derivatives-engine STAND-IN (launcher
service), the real kube-apiserver and Kafka (input events are produced to Kafka as the bridge would).

Most tests share one worker (module scope; each uses its own tenants). The stand-in is one process for the
session: tests reset its faults first and only look at their own allocations (client tokens start with the
request's prefix).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from devstack.harness.worker import WorkerProcess
from pipeline.compute.service import token_prefix
from tests.integration.conftest import JWT_SECRET, SNAPSHOT_SIGNING_KEY, free_port, now_iso

pytestmark = pytest.mark.integration

#: Every secret handed out in this module, for the scan at its end.
REVEALED: list[str] = []

K8S_SHAPES = {
    "running_on_create": True,  # the local kube-apiserver has no scheduler: a created Pod counts as running
    "price_per_gpu_hour": {"H100": 0.5},
    "shapes": [{"name": "h100-x1", "gpu_name": "H100", "gpu_count": 1, "vcpus": 4, "memory_gib": 16, "capacity": 2}],
}


# -- helpers ----------------------------------------------------------------------------------------------


def call(worker: WorkerProcess, method: str, path: str, token: str, body: Any = None,
         timeout: float = 120, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One API request, repeated like a client honouring Retry-After while the worker answers 503 not-ready
    (a rebalance, e.g. a second worker joining just after both said ready), until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        code, answer = _request(worker, method, path, token, body, timeout, headers)
        not_ready = code == 503 and isinstance(answer, dict) and answer.get("error", {}).get("code") == "not-ready"
        if not not_ready or time.monotonic() > deadline:
            return code, answer
        time.sleep(0.5)


def _request(worker: WorkerProcess, method: str, path: str, token: str, body: Any, timeout: float,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - a loopback URL built here
        f"{worker.url}{path}", data=data, method=method,
        headers={**(headers or {}), "Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def standin(url: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def wait_for(check: Callable[[], Any], timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def remember(body: dict[str, Any]) -> dict[str, Any]:
    access = body.get("access") if "access" in body else body
    if isinstance(access, dict) and access.get("ssh_private_key"):
        REVEALED.extend([access["ssh_private_key"], access["jupyter_token"]])
        REVEALED.extend(line for line in access["ssh_private_key"].splitlines() if line and "-----" not in line)
    return body


def mine(engine_url: str, request_id: str) -> list[dict[str, Any]]:
    """The stand-in's active (paid-for) allocations made for ``request_id``."""
    prefix = token_prefix(request_id)
    active: list[dict[str, Any]] = standin(engine_url, "GET", "/_standin/state")["active"]
    return [a for a in active if a["client_token"].startswith(prefix)]


def cheapest(engine_url: str, gpu: str, count: int, hours: float) -> str:
    """The cheapest on-demand offer with at least ``count`` ``gpu`` on one machine and capacity left, by the
    stand-in's own quote (brute force)."""
    quote = standin(engine_url, "POST", "/v1/quotes", {"gpu_name": gpu})
    feasible = [o for o in quote["offers"] if o["gpu_count"] >= count and o["capacity_class"] == "on_demand"
                and o["available"] > 0]
    best = min(feasible, key=lambda o: (round(o["wholesale_price_per_hour"] * hours * 1e6), o["offer_id"]))
    return str(best["offer_id"])


def capacity_row(view: dict[str, Any], provider: str, region: str, resource: str) -> dict[str, Any]:
    row: dict[str, Any] = next(r for r in view["rows"]
                               if (r["provider"], r["region"], r["resource_type"]) == (provider, region, resource))
    return row


async def read_topic(bootstrap: str, topic: str, idle: float = 3.0) -> list[bytes]:
    """Every raw record value of ``topic`` from the beginning."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    values: list[bytes] = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(idle * 1000), max_records=5000)
            if not batches:
                return values
            values.extend(r.value or b"" for records in batches.values() for r in records)
    finally:
        await consumer.stop()


def produce(bootstrap: str, topic: str, event: dict[str, Any]) -> None:
    """Send ``event`` to Kafka exactly as the bridge forwards a platform event (keyed by tenant id). The tests
    do not go through Pulsar: on the shared development Pulsar every session's workers share the bridge's
    KeyShared subscription, so an event may be handed to another session's (possibly stopped) bridge."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, json.dumps(event).encode(), key=event["tenant_id"].encode())
        finally:
            await producer.stop()

    asyncio.run(send())


async def consumer_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer group ``group`` has not committed yet."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        begins = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    group_reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await group_reader.start()
    try:
        lag = 0
        for partition in partitions:
            committed = await group_reader.committed(partition)
            lag += ends[partition] - max(committed or 0, begins[partition])
        return lag
    finally:
        await group_reader.stop()


def create_tenant(worker: WorkerProcess, admin: str, tenant_id: str, tier: str = "enterprise") -> None:
    code, body = call(worker, "POST", "/api/v1/provision", admin,
                      {"tenant_id": tenant_id, "name": f"Tenant {tenant_id}", "tier": tier})
    assert code == 202, body
    wait_for(lambda: worker.get(f"/api/v1/tenants/{tenant_id}/quota", admin)[0] == 200, what=f"tenant {tenant_id}")


def tenant_namespace(kubeconfig: str, tenant_id: str) -> Any:
    """The tenant's namespace with its ``default`` ServiceAccount (no controller-manager creates it here, and
    without it the ServiceAccount admission plugin refuses Pods)."""
    k8s_config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    api: Any = k8s_client.CoreV1Api()
    namespace = f"tenant-{tenant_id}"
    api.create_namespace({"metadata": {"name": namespace}})
    api.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
    return api


def gpu(tenant: str, count: int = 4, **kw: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "resources": {"gpu": {"type": "H100", "count": count}}, "duration_hours": 6,
            "purpose": "training", **kw}


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compute_env(kafka_service: dict[str, str], derivatives_service: dict[str, str],
                kubernetes_service: dict[str, str], run_id: str) -> dict[str, str]:
    return {
        **kafka_service, **derivatives_service, **kubernetes_service,
        "APP_ID": f"it-compute-{secrets.token_hex(4)}",
        "JWT_SECRET": JWT_SECRET,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY,
        "EXECUTOR_ENABLED": "false",
        "BRIDGE_ENABLED": "false",  # events are produced to Kafka directly (see produce())
        "STORE": "rocksdb://",
        "COMPUTE_KUBERNETES": json.dumps(K8S_SHAPES),
        "COMPUTE_ALLOCATE_TIMEOUT_SECONDS": "2",
        "COMPUTE_POLL_INTERVAL_SECONDS": "0.2",
        "COMPUTE_ENFORCE_INTERVAL_SECONDS": "2",
        "COMPUTE_TENANT_POLICIES": json.dumps({f"c{run_id}-thrifty": {"budget_usd": 40}}),
    }


@pytest.fixture(scope="module")
def worker(compute_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    folder = tmp_path_factory.mktemp("compute-worker")
    port = free_port()
    process = WorkerProcess(compute_env, port, folder / "data", folder / "worker.log").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def engine(compute_env: dict[str, str]) -> str:
    url = compute_env["DERIVATIVES_ENGINE_URL"]
    standin(url, "POST", "/_standin/reset")
    return url


# -- tests -------------------------------------------------------------------------------------------------


def test_a_gpu_request_gets_the_cheapest_offer_and_termination_releases_it(
    worker: WorkerProcess, engine: str, admin_token: str, run_id: str
) -> None:
    tenant = f"c{run_id}-gpu"
    create_tenant(worker, admin_token, tenant)
    expected = cheapest(engine, "H100", 4, 6)
    provider, region = expected.split("/")[:2]
    code, before = call(worker, "GET", f"/api/v1/compute/capacity?tenant_id={tenant}", admin_token)
    assert code == 200 and before["tenant"]["gpus_remaining"] == 4
    pool_before = capacity_row(before, provider, region, "gpu:H100")

    code, body = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant))
    assert code == 201, body
    remember(body)
    request_id = body["request_id"]
    assert body["state"] == "running" and body["offer_id"] == expected
    assert body["access"]["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    [allocation] = mine(engine, request_id)
    assert allocation["offer_id"] == expected and allocation["state"] == "running"

    code, status = call(worker, "GET", f"/api/v1/compute/provision/{request_id}", admin_token)
    assert code == 200 and status["state"] == "running" and status["allocation_id"] == allocation["allocation_id"]
    assert status["decision"]["candidates"][0]["offer_id"] == expected
    assert status["decision"]["excluded"]["gpu_type"] and status["access"]["jupyter_url"].endswith("token=***")
    code, during = call(worker, "GET", f"/api/v1/compute/capacity?tenant_id={tenant}", admin_token)
    pool = capacity_row(during, provider, region, "gpu:H100")
    assert pool["allocated_instances"] == pool_before["allocated_instances"] + 1
    assert pool["available_instances"] == pool_before["available_instances"] - 1
    assert (during["tenant"]["gpus_in_use"], during["tenant"]["gpus_remaining"]) == (4, 0)
    # the quota view (the dashboard's usage row) counts the running machine: it showed "GPUs 0 / 4"
    code, quota = call(worker, "GET", f"/api/v1/tenants/{tenant}/quota", admin_token)
    assert code == 200 and quota["usage"]["gpus"] == 4 and quota["limits"]["gpus"] == 4, quota
    assert quota["compute_allocations"] == 1 and quota["compute"]["cpu_cores"] > 0

    code, deleted = call(worker, "DELETE", f"/api/v1/compute/provision/{request_id}", admin_token)
    assert code == 200 and deleted["state"] == "terminated" and deleted["termination_reason"] == "user"
    assert mine(engine, request_id) == []  # the stand-in holds nothing of it any more
    code, after = call(worker, "GET", f"/api/v1/compute/capacity?tenant_id={tenant}", admin_token)
    assert capacity_row(after, provider, region, "gpu:H100") == pool_before
    assert after["tenant"]["gpus_remaining"] == 4
    code, quota = call(worker, "GET", f"/api/v1/tenants/{tenant}/quota", admin_token)
    assert code == 200 and quota["usage"]["gpus"] == 0 and quota["compute_allocations"] == 0, quota


def tenant_allocations(engine_url: str, tenant: str) -> list[dict[str, Any]]:
    """The stand-in's active allocations of any request of ``tenant`` (a tenant id shorter than 15 characters:
    the client tokens start with it, see ``token_prefix``)."""
    assert len(tenant) < 15
    active: list[dict[str, Any]] = standin(engine_url, "GET", "/_standin/state")["active"]
    return [a for a in active if a["client_token"].startswith(f"{tenant}-")]


def test_a_retried_provision_with_the_same_idempotency_key_allocates_once(
    worker: WorkerProcess, engine: str, admin_token: str, run_id: str
) -> None:
    tenant = f"i{run_id}"
    create_tenant(worker, admin_token, tenant)
    key = {"Idempotency-Key": f"it-{run_id}-{secrets.token_hex(8)}"}
    code, first = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant, 1), headers=key)
    assert code == 201, first
    remember(first)
    # the client "timed out" and sends the same request again: the same request, nothing allocated again
    code, again = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant, 1), headers=key)
    assert code == 201, again
    assert again["request_id"] == first["request_id"] and again["access"] is None
    assert again["offer_id"] == first["offer_id"]
    [allocation] = tenant_allocations(engine, tenant)
    assert allocation["client_token"].startswith(token_prefix(first["request_id"]))
    code, listed = call(worker, "GET", f"/api/v1/compute/provision?tenant_id={tenant}", admin_token)
    assert code == 200 and [item["request_id"] for item in listed["items"]] == [first["request_id"]]
    code, reused = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant, 2), headers=key)
    assert code == 422 and reused["error"]["code"] == "idempotency-key-reused", reused
    assert len(tenant_allocations(engine, tenant)) == 1
    code, _ = call(worker, "DELETE", first["status_url"], admin_token)
    assert code == 200 and tenant_allocations(engine, tenant) == []


def test_a_quote_allocates_and_records_nothing(
    worker: WorkerProcess, engine: str, admin_token: str, run_id: str
) -> None:
    tenant = f"q{run_id}"
    create_tenant(worker, admin_token, tenant)
    expected = cheapest(engine, "H100", 4, 6)
    code, quote = call(worker, "POST", "/api/v1/compute/quote", admin_token, gpu(tenant))
    assert code == 200, quote
    assert quote["would_provision"] is True and quote["offers"][0]["offer_id"] == expected
    assert quote["offers"][0]["total_cost"] == pytest.approx(quote["offers"][0]["price_per_hour"] * 6)
    assert {group["reason"] for group in quote["excluded"]} >= {"gpu_type"}
    assert tenant_allocations(engine, tenant) == []
    code, listed = call(worker, "GET", f"/api/v1/compute/provision?tenant_id={tenant}", admin_token)
    assert code == 200 and listed["items"] == []
    code, view = call(worker, "GET", f"/api/v1/compute/capacity?tenant_id={tenant}", admin_token)
    assert code == 200 and view["tenant"]["gpus_in_use"] == 0 and view["tenant"]["gpus_remaining"] == 4


def test_failover_on_injected_failures_leaves_nothing_allocated(
    worker: WorkerProcess, engine: str, admin_token: str, run_id: str
) -> None:
    tenant = f"c{run_id}-failover"
    create_tenant(worker, admin_token, tenant)
    for kind in ("refused", "timeout", "provision_fail"):  # timeout: the allocation IS made, the answer hangs
        standin(engine, "POST", "/_standin/faults", {"kind": kind, "count": 1, "hang_s": 6})
    code, body = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant))
    assert code == 201, body
    remember(body)
    assert body["attempts"] == 4
    code, status = call(worker, "GET", body["status_url"], admin_token)
    assert [a["outcome"] for a in status["attempts"]] == ["refused", "timeout", "provisioning_failed", "running"]
    assert [a["offer_id"] for a in status["attempts"]] == [c["offer_id"] for c in status["decision"]["candidates"][:4]]
    assert all(a["released"] for a in status["attempts"][1:3])
    [held] = mine(engine, body["request_id"])  # the abandoned attempts were released
    assert held["allocation_id"] == status["allocation_id"]
    code, _ = call(worker, "DELETE", body["status_url"], admin_token)
    assert code == 200 and mine(engine, body["request_id"]) == []

    standin(engine, "POST", "/_standin/faults", {"kind": "capacity", "count": 5})  # as many as attempts
    code, failed = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant))
    assert code == 502 and failed["error"]["code"] == "allocation-failed"
    assert [a["outcome"] for a in failed["error"]["details"]["attempts"]] == ["capacity"] * 5
    assert mine(engine, failed["error"]["details"]["request_id"]) == []


def test_quota_and_budget_refusals_say_why(worker: WorkerProcess, engine: str, admin_token: str, run_id: str) -> None:
    small, big, thrifty = f"c{run_id}-small", f"c{run_id}-big", f"c{run_id}-thrifty"
    tiny = f"c{run_id}-tiny"
    create_tenant(worker, admin_token, small, tier="standard")  # no GPU in its quota
    create_tenant(worker, admin_token, big)
    create_tenant(worker, admin_token, thrifty)  # COMPUTE_TENANT_POLICIES: budget $40
    create_tenant(worker, admin_token, tiny, tier="free")  # 2 cores, 4 GiB
    cpu_only = {"tenant_id": tiny, "resources": {"vcpus": 64, "memory_gib": 256}, "duration_hours": 1}
    over = [(gpu(small, 1), "gpus", 1, 0), (gpu(big, 8), "gpus", 8, 4), (cpu_only, "cpu_cores", 64, 2)]
    for body, resource, requested, limit in over:  # the quota admission: nothing is stored
        code, refused = call(worker, "POST", "/api/v1/compute/provision", admin_token, body)
        assert code == 422, refused
        error = refused["error"]
        assert error["code"] == "quota-exceeded", error
        details = error["details"]
        assert (details["resource"], details["requested"], details["in_use"], details["limit"]) == \
            (resource, requested, 0, limit)
    cases = [
        (gpu(thrifty, 4), "budget", "above the remaining budget $40.00"),
    ]
    for body, constraint, says in cases:
        code, refused = call(worker, "POST", "/api/v1/compute/provision", admin_token, body)
        assert code == 422, refused
        error = refused["error"]
        assert error["code"] == "no-feasible-offer" and error["details"]["binding_constraint"] == constraint
        assert says in error["message"], error["message"]
        code, status = call(worker, "GET", error["details"]["status_url"], admin_token)
        assert code == 200 and status["state"] == "failed" and status["decision"]["binding_constraint"] == constraint
    code, _ = call(worker, "PUT", f"/api/v1/tenants/{big}/quota", admin_token,
                       {"cpu_cores": 32, "memory_gib": 128, "gpus": 8, "storage_gib": 1000})
    assert code == 202
    wait_for(lambda: worker.get(f"/api/v1/tenants/{big}/quota", admin_token)[1]["limits"]["gpus"] == 8,
             what="the raised quota")
    code, body = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(big, 8))
    assert code == 201, body
    remember(body)
    call(worker, "DELETE", body["status_url"], admin_token)
    assert mine(engine, body["request_id"]) == []


def test_the_kubernetes_provider_creates_and_deletes_the_pod_in_the_tenants_namespace(
    worker: WorkerProcess, compute_env: dict[str, str], admin_token: str, run_id: str
) -> None:
    tenant = f"c{run_id}-k8s"
    create_tenant(worker, admin_token, tenant)
    api = tenant_namespace(compute_env["KUBECONFIG"], tenant)
    namespace = f"tenant-{tenant}"
    code, body = call(worker, "POST", "/api/v1/compute/provision", admin_token,
                      gpu(tenant, 1, providers=["kubernetes"], resources={"gpu": {"type": "H100", "count": 1},
                                                                          "vcpus": 2, "memory_gib": 8}))
    assert code == 201, body
    remember(body)
    assert body["offer_id"] == "kubernetes/in-house/h100-x1/on_demand" and body["price_per_hour"] == 0.628
    namespace_name, pod_name = body["access"]["allocation_id"].split("/")
    assert namespace_name == namespace
    pod: Any = api.read_namespaced_pod(pod_name, namespace)
    assert pod.status.phase == "Pending"  # no scheduler on this API server
    limits = pod.spec.containers[0].resources.limits
    assert (limits["nvidia.com/gpu"], limits["cpu"], limits["memory"]) == ("1", "2", "8Gi")
    env = {e.name: e for e in pod.spec.containers[0].env}
    assert env["SSH_AUTHORIZED_KEYS"].value == body["access"]["ssh_public_key"]
    assert env["JUPYTER_TOKEN"].value is None and env["JUPYTER_TOKEN"].value_from.secret_key_ref.name == \
        f"{pod_name}-access"  # the token is in a Secret, not in the Pod spec
    assert body["access"]["jupyter_token"] not in json.dumps(api.api_client.sanitize_for_serialization(pod))
    assert [s.metadata.name for s in api.list_namespaced_secret(namespace).items] == [f"{pod_name}-access"]

    code, deleted = call(worker, "DELETE", body["status_url"], admin_token)
    assert code == 200 and deleted["state"] == "terminated"
    assert [p.metadata.name for p in api.list_namespaced_pod(namespace).items] == []
    assert api.list_namespaced_secret(namespace).items == []


def test_a_compute_request_event_is_allocated_and_its_access_claimed_once(
    worker: WorkerProcess, engine: str, compute_env: dict[str, str], admin_token: str, run_id: str
) -> None:
    tenant = f"c{run_id}-mlops"
    create_tenant(worker, admin_token, tenant)
    # Short: other deployments on this shared Kafka (other app ids, e.g. other sessions' test workers) see the same
    # input event and may allocate for it at the same stand-in; they release at the end of the duration.
    event = {"event_id": f"{tenant}-evt", "tenant_id": tenant, "occurred_at": now_iso(), "request_name": "nightly-1",
             "resources": {"gpu": {"type": "H100", "count": 2}}, "duration_hours": 0.1, "purpose": "training"}
    produce(compute_env["KAFKA_BOOTSTRAP_SERVERS"], "compute-request-events", event)
    produce(compute_env["KAFKA_BOOTSTRAP_SERVERS"], "compute-request-events", event)  # redelivered: one request
    request_id = f"{tenant}.nightly-1"
    # The record says running a moment before the access details are in the vault: wait for both.
    status = wait_for(lambda: (lambda r: r[1] if r[0] == 200 and r[1]["state"] == "running"
                               and r[1]["access_claimable"] else None)(
        worker.get(f"/api/v1/compute/provision/{request_id}", admin_token)), what="the event's allocation")
    assert status["request"]["purpose"] == "training"
    code, access = call(worker, "POST", f"/api/v1/compute/provision/{request_id}/access", admin_token)
    assert code == 200 and access["allocation_id"] == status["allocation_id"]
    remember(access)
    code, again = call(worker, "POST", f"/api/v1/compute/provision/{request_id}/access", admin_token)
    assert code == 410 and again["error"]["code"] == "access-gone"
    # Two deliveries of the event, one allocation by this worker (its log names every allocation's token).
    assert worker.log_path.read_bytes().count(f"(token {token_prefix(request_id)}".encode()) == 1
    assert status["allocation_id"] in {a["allocation_id"] for a in mine(engine, request_id)}
    code, _ = call(worker, "DELETE", f"/api/v1/compute/provision/{request_id}", admin_token)
    assert code == 200
    assert status["allocation_id"] not in {a["allocation_id"] for a in mine(engine, request_id)}


def test_a_slow_allocation_answers_202_and_is_claimed_later(
    worker: WorkerProcess, engine: str, admin_token: str, run_id: str
) -> None:
    tenant = f"c{run_id}-slow"
    create_tenant(worker, admin_token, tenant)
    code, accepted = call(worker, "POST", "/api/v1/compute/provision?wait_seconds=0", admin_token, gpu(tenant))
    assert code == 202 and accepted["access"] is None
    wait_for(lambda: worker.get(accepted["status_url"], admin_token)[1]["state"] == "running", what="running")
    code, access = call(worker, "POST", accepted["access_url"], admin_token)
    assert code == 200
    remember(access)
    call(worker, "DELETE", accepted["status_url"], admin_token)
    assert mine(engine, accepted["request_id"]) == []


def test_access_secrets_never_appear_in_logs_events_audit_or_tables(
    worker: WorkerProcess, compute_env: dict[str, str], admin_token: str, run_id: str
) -> None:
    tenant = f"c{run_id}-secrets"
    create_tenant(worker, admin_token, tenant)
    code, body = call(worker, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant, 1))
    assert code == 201
    remember(body)
    own = [body["access"]["ssh_private_key"], body["access"]["jupyter_token"]]
    code, status = call(worker, "GET", body["status_url"], admin_token)
    assert code == 200
    code, _ = call(worker, "DELETE", body["status_url"], admin_token)
    assert code == 200
    bootstrap = compute_env["KAFKA_BOOTSTRAP_SERVERS"]
    records_topic = f"{compute_env['APP_ID']}-compute-records"
    changelog = f"{records_topic}-changelog"

    def in_the_table() -> bool:  # the terminated record reached the table (its changelog)
        values = asyncio.run(read_topic(bootstrap, changelog, idle=1.0))
        return any(body["request_id"].encode() in v and b'"state":"terminated"' in v for v in values)

    wait_for(in_the_table, timeout=300, what="the terminated record in the table's changelog")
    topics = ["provisioning-events", "audit-events", records_topic, changelog]
    contents = {topic: asyncio.run(read_topic(bootstrap, topic)) for topic in topics}
    ours = [v for v in contents["provisioning-events"] if body["request_id"].encode() in v]
    assert [json.loads(v)["status"] for v in ours] == [
        "requested", "allocating", "provisioning", "running", "terminating", "terminated"]
    assert any(body["request_id"].encode() in v for v in contents["audit-events"])
    assert any(body["request_id"].encode() in v for v in contents[records_topic])
    log = worker.log_path.read_bytes()
    assert b"attempt 1 on " in log  # the log is the worker's, with its allocation lines
    data_files = [p for p in Path(worker.env["DATA_DIR"]).rglob("*") if p.is_file()]
    assert data_files
    revealed = [s for s in {*REVEALED, *own} if len(s) >= 16]
    assert len(revealed) >= len(own)
    for secret in revealed:
        needle = secret.encode()
        assert needle not in log, "a secret is in the worker's log"
        for topic, values in contents.items():
            assert not any(needle in v for v in values), f"a secret is in {topic}"
        assert needle not in json.dumps(status).encode()
        for path in data_files:
            assert needle not in path.read_bytes(), f"a secret is in {path}"


def test_records_terminate_at_the_end_of_their_duration_and_when_idle(
    compute_env: dict[str, str], start_worker: Callable[..., WorkerProcess], admin_token: str, run_id: str,
) -> None:
    app_id = f"it-compute-life-{secrets.token_hex(4)}"
    env = {**compute_env, "APP_ID": app_id, "COMPUTE_IDLE_WARNING_SECONDS": "30",
           "COMPUTE_ENFORCE_INTERVAL_SECONDS": "1"}
    worker = start_worker(env)
    worker.wait_ready()
    # A new app id reads resource-metrics from the beginning: let it catch up with the shared topic's history
    # first, so that the samples below are not queued behind it.
    wait_for(lambda: asyncio.run(consumer_lag(env["KAFKA_BOOTSTRAP_SERVERS"], app_id, "resource-metrics")) < 100,
             timeout=900, what="the worker to catch up with resource-metrics")
    tenant = f"c{run_id}-life"
    create_tenant(worker, admin_token, tenant)
    idle_policy = {"after_minutes": 1, "below_utilization": 0.5}
    code, short = call(worker, "POST", "/api/v1/compute/provision", admin_token,
                       gpu(tenant, 1, duration_hours=0.004, idle_termination=idle_policy))
    assert code == 201
    code, idle = call(worker, "POST", "/api/v1/compute/provision", admin_token,
                      gpu(tenant, 1, idle_termination=idle_policy))
    assert code == 201
    code, unwatched = call(worker, "POST", "/api/v1/compute/provision", admin_token,
                           gpu(tenant, 1, idle_termination=idle_policy))
    assert code == 201
    remember(short)
    remember(idle)
    remember(unwatched)
    # A busy sample 30 s into the run, then idle ones 40 s and 70 s after it (past the activity resolution,
    # warning seconds / 4): idle is observed from the busy sample to the last idle one, so the warning comes
    # once 60 - 30 s of idleness are observed and the termination once 60 s are and the warning is 30 s old.
    busy_at = datetime.fromisoformat(idle["running_since"]) + timedelta(seconds=30)
    for number, (at, gpus) in enumerate(((busy_at, 1), (busy_at + timedelta(seconds=40), 0),
                                         (busy_at + timedelta(seconds=70), 0))):
        produce(env["KAFKA_BOOTSTRAP_SERVERS"], "resource-metrics",
                {"event_id": f"{tenant}-m{number}", "tenant_id": tenant, "occurred_at": at.isoformat(),
                 "workload": idle["request_id"], "cpu_cores": 0, "memory_gib": 2, "gpus": gpus})

    def state(view: dict[str, Any]) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            status: dict[str, Any] = worker.get(view["status_url"], admin_token)[1]
            return status if status["state"] in ("terminated", "failed") else None
        return check

    done_short = wait_for(state(short), what="termination at the end of the duration")
    assert done_short["termination_reason"] == "duration_elapsed"
    assert datetime.fromisoformat(done_short["finished_at"]) >= datetime.fromisoformat(done_short["ends_at"])
    done_idle = wait_for(state(idle), timeout=400, what="idle termination")
    assert done_idle["termination_reason"] == "idle"
    assert done_idle["last_active_at"] is not None and datetime.fromisoformat(done_idle["last_active_at"]) == busy_at
    assert datetime.fromisoformat(done_idle["finished_at"]) >= busy_at + timedelta(seconds=60)
    statuses = [json.loads(v) for v in asyncio.run(read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], "provisioning-events"))
                if idle["request_id"].encode() in v]
    order = [s["status"] for s in statuses]
    assert order.count("idle-warning") == 1 and order.index("idle-warning") < order.index("terminating")
    warning = statuses[order.index("idle-warning")]
    assert warning["kind"] == "compute-status" and warning["detail"]["idle_since"] is not None
    # opted in, no sample of its own: still running long after the other one's idle window
    code, still = worker.get(unwatched["status_url"], admin_token)
    assert code == 200 and still["state"] == "running"
    call(worker, "DELETE", unwatched["status_url"], admin_token)
    engine = env["DERIVATIVES_ENGINE_URL"]
    for view in (done_short, done_idle):
        assert view["allocation_id"] not in {a["allocation_id"] for a in mine(engine, view["request_id"])}


def tenants_on_every_partition(prefix: str, partitions: int, count: int) -> list[str]:
    """``count`` tenant ids whose records land on every partition of the topics (Kafka's default partitioner,
    as the worker's producer uses): random ids left one worker without a tenant in about 1 run in 32."""
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    chosen: dict[int, str] = {}
    extra: list[str] = []
    for i in range(1000):
        tenant = f"{prefix}{i}"
        partition = partitioner(tenant.encode(), every, every)
        if partition not in chosen:
            chosen[partition] = tenant
        elif len(extra) < count - partitions:
            extra.append(tenant)
        if len(chosen) == partitions and len(extra) >= count - partitions:
            break
    return [*chosen.values(), *extra]


def test_requests_reach_the_owner_worker_from_any_worker(
    compute_env: dict[str, str], start_worker: Callable[..., WorkerProcess], admin_token: str, run_id: str,
) -> None:
    env = {**compute_env, "APP_ID": f"it-compute-two-{secrets.token_hex(4)}"}
    first, second = start_worker(env), start_worker(env)
    first.wait_ready()
    second.wait_ready()
    tenants = tenants_on_every_partition(f"c{run_id}-w", partitions=4, count=6)  # so on both workers
    for tenant in tenants:
        create_tenant(first, admin_token, tenant)

        def seen(tenant_id: str = tenant) -> bool:
            return second.get(f"/api/v1/tenants/{tenant_id}/quota", admin_token)[0] == 200

        wait_for(seen, what=f"{tenant} on the second worker")
    engine = env["DERIVATIVES_ENGINE_URL"]
    standin(engine, "POST", "/_standin/reset")
    owners: list[WorkerProcess] = []
    for i, tenant in enumerate(tenants):
        via, other = (first, second) if i % 2 else (second, first)
        key = {"Idempotency-Key": f"two-{i}"}
        code, body = call(via, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant, 1), headers=key)
        assert code == 201, body
        remember(body)
        # the same key through the other worker: routed to the same owner, the same request, no second machine
        code, retried = call(other, "POST", "/api/v1/compute/provision", admin_token, gpu(tenant, 1), headers=key)
        assert code == 201 and retried["request_id"] == body["request_id"], retried
        assert len(mine(engine, body["request_id"])) == 1
        for worker in (first, second):  # the listing and a quote are answered by the owner, from either worker
            code, listed = call(worker, "GET", f"/api/v1/compute/provision?tenant_id={tenant}", admin_token)
            assert code == 200 and [item["request_id"] for item in listed["items"]] == [body["request_id"]], listed
            code, quote = call(worker, "POST", "/api/v1/compute/quote", admin_token, gpu(tenant, 1))
            assert code == 200 and quote["quota_refusal"] is None and quote["binding_constraint"] is None, quote
        for worker in (first, second):
            code, status = call(worker, "GET", body["status_url"], admin_token)
            assert code == 200 and status["state"] == "running"
            code, view = call(worker, "GET", f"/api/v1/compute/capacity?tenant_id={tenant}", admin_token)
            assert code == 200 and view["tenant"]["gpus_in_use"] == 1
            code, quota = call(worker, "GET", f"/api/v1/tenants/{tenant}/quota", admin_token)  # read on the owner
            assert code == 200 and quota["usage"]["gpus"] == 1 and quota["compute_allocations"] == 1, quota
        code, deleted = call(other, "DELETE", body["status_url"], admin_token)
        assert code == 200 and deleted["state"] == "terminated", deleted
        assert mine(engine, body["request_id"]) == []
        ran_on = [w for w in (first, second) if f"(token {token_prefix(body['request_id'])}".encode()
                  in w.log_path.read_bytes()]
        assert len(ran_on) == 1  # one worker, the tenant's owner, allocated it
        owners.append(ran_on[0])
    # Each tenant was asked through both workers, so one of its two calls came through the worker that does not
    # own it: with owners on both workers, both forwarded. (Which call was forwarded depends on the partition
    # assignment, so counting only the first calls' forwards could find none.)
    assert {first, second} == set(owners), "the tenants were not spread over both workers"
