"""Cost monitoring end to end: a real worker process, Kafka, the real kube-apiserver (the in-house provider, whose
price the configuration fixes) and the derivatives-engine stand-in.

A tenant with a budget of $2 allocates an H100 for 2 h at $0.628/h (63 % of it): GET costs shows the spend and
the commitment, the spend gauges carry the tenant, and exactly one budget-alert event for the 50 % threshold
(none for 80 %) is on provisioning-events, however many of the tenant's compute records changed after it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.harness.worker import WorkerProcess
from tests.integration.conftest import JWT_SECRET, SNAPSHOT_SIGNING_KEY, free_port
from tests.integration.test_compute import (
    K8S_SHAPES,
    call,
    create_tenant,
    gpu,
    read_topic,
    remember,
    tenant_namespace,
    wait_for,
)

pytestmark = pytest.mark.integration

PRICE = 0.628  # K8S_SHAPES' h100-x1: 0.5 (GPU) + 4 x 0.02 (vCPU) + 16 x 0.003 (GiB) per hour
BUDGET = 2.0


@pytest.fixture(scope="module")
def costs_env(kafka_service: dict[str, str], derivatives_service: dict[str, str],
              kubernetes_service: dict[str, str], run_id: str) -> dict[str, str]:
    return {
        **kafka_service, **derivatives_service, **kubernetes_service,
        "APP_ID": f"it-costs-{secrets.token_hex(4)}",
        "JWT_SECRET": JWT_SECRET,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY,
        "EXECUTOR_ENABLED": "false",
        "BRIDGE_ENABLED": "false",
        "STORE": "rocksdb://",
        "COMPUTE_KUBERNETES": json.dumps(K8S_SHAPES),
        "COMPUTE_ALLOCATE_TIMEOUT_SECONDS": "2",
        "COMPUTE_POLL_INTERVAL_SECONDS": "0.2",
        "COMPUTE_TENANT_POLICIES": json.dumps({f"b{run_id}-budget": {"budget_usd": BUDGET}}),
        "COMPUTE_BUDGET_ALERT_THRESHOLDS": "0.5,0.8,1.0",
    }


@pytest.fixture(scope="module")
def worker(costs_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    folder = tmp_path_factory.mktemp("costs-worker")
    process = WorkerProcess(costs_env, free_port(), folder / "data", folder / "worker.log").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def budget_alerts(bootstrap: str, tenant: str) -> list[dict[str, Any]]:
    events = (json.loads(raw) for raw in asyncio.run(read_topic(bootstrap, "provisioning-events", idle=2.0)))
    return [e for e in events if e.get("kind") == "budget-alert" and e.get("tenant_id") == tenant]


def compute_states(bootstrap: str, tenant: str) -> list[tuple[str, str]]:
    events = (json.loads(raw) for raw in asyncio.run(read_topic(bootstrap, "provisioning-events", idle=2.0)))
    return [(e["detail"]["request_id"], e["status"]) for e in events
            if e.get("kind") == "compute-status" and e.get("tenant_id") == tenant]


def test_costs_and_the_half_budget_alert_once(
    worker: WorkerProcess, costs_env: dict[str, str], admin_token: str, run_id: str
) -> None:
    tenant = f"b{run_id}-budget"
    bootstrap = costs_env["KAFKA_BOOTSTRAP_SERVERS"]
    create_tenant(worker, admin_token, tenant)
    tenant_namespace(costs_env["KUBECONFIG"], tenant)
    code, before = call(worker, "GET", f"/api/v1/tenants/{tenant}/costs", admin_token)
    assert code == 200, before
    assert (before["spent_usd"], before["committed_usd"], before["budget_usd"]) == (0.0, 0.0, BUDGET)

    body = gpu(tenant, 1, providers=["kubernetes"], duration_hours=2,
               resources={"gpu": {"type": "H100", "count": 1}, "vcpus": 2, "memory_gib": 8})
    code, provisioned = call(worker, "POST", "/api/v1/compute/provision", admin_token, body)
    assert code == 201, provisioned
    remember(provisioned)
    assert provisioned["price_per_hour"] == PRICE

    def costs() -> dict[str, Any] | None:
        code, answer = call(worker, "GET", f"/api/v1/tenants/{tenant}/costs", admin_token)
        assert code == 200, answer
        return answer if answer["spent_usd"] > 0 else None  # it has run a moment

    during = wait_for(costs, what="spend of the running allocation")
    assert during["committed_usd"] > 0 and during["currency"] == "USD"
    assert during["spent_usd"] + during["committed_usd"] == pytest.approx(2 * PRICE)
    assert during["fraction"] == pytest.approx(2 * PRICE / BUDGET)  # 0.628: past 50 %, short of 80 %
    assert during["forecast_usd"] >= 2 * PRICE and during["period"] == "month"

    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:  # noqa: S310 - loopback
        metrics = response.read().decode()
    assert f'provisioning_compute_budget_usd{{tenant="{tenant}"}} {BUDGET}' in metrics
    assert f'provisioning_compute_committed_usd{{tenant="{tenant}"}}' in metrics

    [alert] = wait_for(lambda: budget_alerts(bootstrap, tenant), what="the budget-alert event")
    assert alert["status"] == "crossed" and alert["detail"]["threshold"] == 0.5
    assert alert["detail"]["budget_usd"] == BUDGET and alert["detail"]["fraction"] >= 0.5

    # More records of the tenant change (running, then terminating and terminated): each is checked again,
    # and the threshold already announced is not announced twice.
    request_id = provisioned["request_id"]
    code, deleted = call(worker, "DELETE", provisioned["status_url"], admin_token)
    assert code == 200 and deleted["state"] == "terminated"
    wait_for(lambda: (request_id, "terminated") in compute_states(bootstrap, tenant), what="the terminated event")
    alerts = budget_alerts(bootstrap, tenant)
    assert [(a["event_id"], a["detail"]["threshold"]) for a in alerts] == [(alert["event_id"], 0.5)]
    code, after = call(worker, "GET", f"/api/v1/tenants/{tenant}/costs", admin_token)
    assert code == 200 and after["committed_usd"] == 0.0 and 0 < after["spent_usd"] < 2 * PRICE  # the time it ran
