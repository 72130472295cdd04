from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pipeline.events.models import (
    QuotaExceeded,
    QuotaResource,
    ResourceAnomaly,
    ResourceMetrics,
    Severity,
    TenantCreated,
    Tier,
    UserCreated,
    UserDeleted,
)
from pipeline.provisioners.errors import UnknownTierError
from pipeline.tenants.logic import TENANT_RESOURCES, USER_RESOURCES, handle_user_created, handle_user_deleted
from pipeline.tenants.models import TenantState
from tests.web.conftest import ADMIN, TIER_QUOTAS, FakeReadiness, bearer, error_of, tenant_event, token
from tests.web.memory_state import MemoryState

PROVISION = {"tenant_id": "acme", "name": "Acme Corporation", "tier": "standard", "region": "eu-west-1"}


async def provision(client: TestClient, body: dict[str, Any] | None = None, auth: str = ADMIN) -> Any:
    return await client.post("/api/v1/provision", json=body or PROVISION, headers=bearer(auth))


# -- POST /provision -------------------------------------------------------------------------------


async def test_provision_sends_the_event_and_the_state_shows_the_tenant(client: TestClient, state: MemoryState):
    response = await provision(client)
    assert response.status == 202
    body = await response.json()
    assert body["tenant_id"] == "acme" and body["status"] == "accepted"
    assert body["status_url"] == "/api/v1/tenants/acme/provisioning-status"
    assert response.headers["Location"] == body["status_url"]
    [event] = state.submitted
    assert event.event_id == body["event_id"] and event.tier is Tier.STANDARD and event.region == "eu-west-1"
    assert event.occurred_at.tzinfo is not None

    status = await client.get(body["status_url"], headers=bearer(ADMIN))
    assert status.status == 200
    status_body = await status.json()
    assert status_body["overall"] == "in-progress"
    assert set(status_body["resources"]) == set(TENANT_RESOURCES)
    assert {r["status"] for r in status_body["resources"].values()} == {"pending"}

    quota = await (await client.get("/api/v1/tenants/acme/quota", headers=bearer(ADMIN))).json()
    assert quota["limits"] == TIER_QUOTAS[Tier.STANDARD].model_dump()
    record = await (await client.get("/api/v1/tenants/acme", headers=bearer(ADMIN))).json()
    assert record["name"] == "Acme Corporation" and record["state"] == "active"


async def test_provisioning_an_existing_tenant_is_a_conflict(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    response = await provision(client)
    assert response.status == 409
    error = await error_of(response)
    assert error["code"] == "tenant-exists" and error["details"]["state"] == "active"
    assert len(state.submitted) == 1


async def test_dry_run_returns_the_command_plan_and_sends_nothing(client: TestClient, state: MemoryState):
    response = await client.post("/api/v1/provision?dry_run=true", json=PROVISION, headers=bearer(ADMIN))
    assert response.status == 200
    body = await response.json()
    assert body["dry_run"] is True and body["tenant_id"] == "acme"
    assert body["event"]["tenant_id"] == "acme" and body["event"]["tier"] == "standard"
    assert set(body["plan"]) == set(TENANT_RESOURCES)
    assert body["plan"]["kubernetes"]["action"] == "create"
    assert body["plan"]["kubernetes"]["spec"]["tier"] == "standard"
    assert state.submitted == [] and await state.tenant("acme") is None
    [record] = state.audit_log
    assert record.outcome == "succeeded" and record.detail["dry_run"] is True


class RecordingPlanner:
    def __init__(self) -> None:
        self.events: list[TenantCreated] = []

    def __call__(self, event: TenantCreated) -> dict[str, Any]:
        self.events.append(event)
        if event.name == "bad tier config":
            raise UnknownTierError("unknown tier 'standard' in the tiers file")
        return {"cassandra": {"keyspace": f"t_{event.tenant_id}", "replication": {"class": "SimpleStrategy"}}}


class TestWithAPlanner:
    @pytest.fixture
    def planner(self) -> RecordingPlanner:
        return RecordingPlanner()

    async def test_dry_run_uses_the_given_planner(
        self, client: TestClient, state: MemoryState, planner: RecordingPlanner
    ):
        response = await client.post("/api/v1/provision?dry_run=1", json=PROVISION, headers=bearer(ADMIN))
        assert response.status == 200
        assert (await response.json())["plan"] == {
            "cassandra": {"keyspace": "t_acme", "replication": {"class": "SimpleStrategy"}}
        }
        [event] = planner.events
        assert event.tenant_id == "acme" and state.submitted == []

    async def test_dry_run_refused_by_the_planner_is_422(self, client: TestClient, planner: RecordingPlanner):
        body = {**PROVISION, "name": "bad tier config"}
        response = await client.post("/api/v1/provision?dry_run=true", json=body, headers=bearer(ADMIN))
        assert response.status == 422
        error = await error_of(response)
        assert error["code"] == "plan-refused" and "unknown tier" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**PROVISION, "tier": "platinum"}, "tier"),
        ({**PROVISION, "tenant_id": "Not A DNS Label"}, "tenant_id"),
        ({k: v for k, v in PROVISION.items() if k != "name"}, "name"),
        ({**PROVISION, "surprise": 1}, "surprise"),
        ({**PROVISION, "region": "EU West"}, "region"),
    ],
)
async def test_invalid_provision_bodies_are_422_with_the_pydantic_errors(client: TestClient, body, field):
    response = await provision(client, body)
    assert response.status == 422
    error = await error_of(response)
    assert error["code"] == "validation-error"
    assert field in [e["loc"][0] for e in error["details"]["errors"]]
    assert all({"loc", "msg", "type"} <= set(e) for e in error["details"]["errors"])


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\x00"])
async def test_malformed_json_is_400(client: TestClient, state: MemoryState, raw: bytes):
    response = await client.post(
        "/api/v1/provision", data=raw, headers={**bearer(ADMIN), "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await error_of(response))["code"] == "malformed-json"
    assert state.submitted == []


async def test_a_json_body_that_is_not_an_object_is_422(client: TestClient):
    response = await client.post("/api/v1/provision", json=["acme"], headers=bearer(ADMIN))
    assert response.status == 422


async def test_bad_query_parameters_are_400(client: TestClient):
    response = await client.post("/api/v1/provision?dry_run=perhaps", json=PROVISION, headers=bearer(ADMIN))
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "invalid-query" and error["details"]["errors"][0]["loc"] == ["dry_run"]


# -- reads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/tenants/ghost", None),
        ("GET", "/api/v1/tenants/ghost/provisioning-status", None),
        ("GET", "/api/v1/tenants/ghost/quota", None),
        ("GET", "/api/v1/tenants/ghost/utilization", None),
        ("PUT", "/api/v1/tenants/ghost/quota", {"cpu_cores": 1, "memory_gib": 1, "gpus": 0, "storage_gib": 1}),
        ("DELETE", "/api/v1/tenants/ghost", None),
        ("GET", "/api/v1/tenants/NOT_VALID", None),
    ],
)
async def test_unknown_tenants_are_404(client: TestClient, method: str, path: str, body: Any):
    response = await client.request(method, path, json=body, headers=bearer(ADMIN))
    assert response.status == 404
    error = await error_of(response)
    assert error["code"] == "tenant-not-found"


async def test_quota_shows_limits_over_quota_marks_and_usage_totals(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    for workload, cpu in (("api", 1.5), ("worker", 2.0)):
        state.record_usage(ResourceMetrics(
            event_id=f"m-{workload}", tenant_id="acme", occurred_at=tenant_event("acme").occurred_at,
            workload=workload, cpu_cores=cpu, memory_gib=3, gpus=0, replicas=2,
        ))
    state.quota_exceeded(QuotaExceeded(
        event_id="q1", tenant_id="acme", occurred_at=tenant_event("acme").occurred_at,
        resource=QuotaResource.CPU_CORES, used=5, limit=4,
    ))
    response = await client.get("/api/v1/tenants/acme/quota", headers=bearer(ADMIN))
    assert response.status == 200
    body = await response.json()
    assert body["limits"]["cpu_cores"] == 4
    assert body["usage"] == {"cpu_cores": 3.5, "memory_gib": 6.0, "gpus": 0.0}
    assert body["workloads"] == 2
    assert body["over_quota"]["cpu_cores"]["used"] == 5


def test_the_quota_views_usage_counts_compute_allocations_once() -> None:
    from pipeline.compute.lifecycle import ComputeHeld
    from pipeline.tenants.models import QuotaRecord
    from pipeline.usage import UsageRecord, WorkloadSample
    from tests.web.conftest import fixed_quota
    from web.models import QuotaResponse

    at = tenant_event("acme").occurred_at
    quota = QuotaRecord(tenant_id="acme", limits=fixed_quota(Tier.ENTERPRISE), updated_at=at, updated_by="tier")
    usage = UsageRecord(tenant_id="acme", workloads={
        "api": WorkloadSample(cpu_cores=1.5, memory_gib=3, gpus=0, at=at),
        # the 4-GPU machine's own utilization sample: the same GPUs as the allocation, counted once
        "acme.c1": WorkloadSample(cpu_cores=20, memory_gib=100, gpus=3, at=at),
    })
    held = ComputeHeld(tenant_id="acme", allocations=1, gpus=4, cpu_cores=52, memory_gib=464, request_ids=["acme.c1"])
    view = QuotaResponse.of(quota, usage, held)
    assert view.usage.model_dump() == {"cpu_cores": 53.5, "memory_gib": 467.0, "gpus": 4.0}
    assert view.compute.model_dump() == {"cpu_cores": 52.0, "memory_gib": 464.0, "gpus": 4.0}
    assert (view.compute_allocations, view.workloads) == (1, 1)
    without = QuotaResponse.of(quota, usage, None)  # no compute state: every sample counts, as before
    assert without.usage.model_dump() == {"cpu_cores": 21.5, "memory_gib": 103.0, "gpus": 3.0}
    assert (without.compute_allocations, without.workloads) == (0, 2)


async def test_utilization_shows_each_workloads_recent_windows_oldest_first(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    start = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    samples = [("api", 0, 1.0), ("api", 30, 3.0), ("api", 60, 2.0), ("api", 17 * 60, 5.0), ("batch", 10, 4.0)]
    for n, (workload, second, cpu) in enumerate(samples):
        state.record_usage(ResourceMetrics(
            event_id=f"m{n}", tenant_id="acme", occurred_at=start + timedelta(seconds=second), workload=workload,
            cpu_cores=cpu, memory_gib=2, gpus=0, requests_per_s=10.0 * (n + 1),
        ))

    response = await client.get("/api/v1/tenants/acme/utilization", headers=bearer(ADMIN))

    assert response.status == 200
    body = await response.json()
    assert body["tenant_id"] == "acme" and body["window_seconds"] == 60
    api = body["workloads"]["api"]
    # 15 windows up to 12:17: 12:00 and 12:01 are too old to show; 12:17 holds one sample
    assert [(w["start"], w["samples"], w["cpu_cores_mean"]) for w in api] == [("2026-11-26T12:17:00Z", 1, 5.0)]
    batch = body["workloads"]["batch"]
    assert len(batch) == 1 and batch[0]["samples"] == 1 and batch[0]["requests_per_s_mean"] == 50.0


async def test_utilization_folds_the_samples_of_a_window(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    start = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    for n, (second, cpu) in enumerate(((0, 1.0), (30, 3.0), (60, 2.0))):
        state.record_usage(ResourceMetrics(
            event_id=f"m{n}", tenant_id="acme", occurred_at=start + timedelta(seconds=second), workload="api",
            cpu_cores=cpu, memory_gib=2, gpus=0, replicas=n + 1,
        ))
    state.record_usage(ResourceMetrics(  # the first sample again: a redelivery
        event_id="m0", tenant_id="acme", occurred_at=start, workload="api", cpu_cores=1.0, memory_gib=2, gpus=0,
    ))

    body = await (await client.get("/api/v1/tenants/acme/utilization", headers=bearer(ADMIN))).json()

    windows = body["workloads"]["api"]
    assert [(w["start"], w["end"], w["samples"]) for w in windows] == [
        ("2026-11-26T12:00:00Z", "2026-11-26T12:01:00Z", 2), ("2026-11-26T12:01:00Z", "2026-11-26T12:02:00Z", 1)]
    assert (windows[0]["cpu_cores_mean"], windows[0]["cpu_cores_max"], windows[0]["replicas_last"]) == (2.0, 3.0, 2)


async def test_tenants_are_paged_with_a_total(client: TestClient, state: MemoryState):
    for i in range(7):
        await state.submit_tenant(tenant_event(f"t{i}"))
    response = await client.get("/api/v1/tenants?offset=2&limit=3", headers=bearer(ADMIN))
    assert response.status == 200
    body = await response.json()
    assert [t["tenant_id"] for t in body["items"]] == ["t2", "t3", "t4"]
    assert (body["total"], body["offset"], body["limit"]) == (7, 2, 3)
    default = await (await client.get("/api/v1/tenants", headers=bearer(ADMIN))).json()
    assert default["limit"] == 50 and len(default["items"]) == 7
    past_end = await (await client.get("/api/v1/tenants?offset=10", headers=bearer(ADMIN))).json()
    assert past_end["items"] == [] and past_end["total"] == 7


@pytest.mark.parametrize("query", ["limit=201", "limit=0", "offset=-1", "limit=ten"])
async def test_paging_limits_are_enforced(client: TestClient, query: str):
    response = await client.get(f"/api/v1/tenants?{query}", headers=bearer(ADMIN))
    assert response.status == 400
    assert (await error_of(response))["code"] == "invalid-query"


async def test_limit_200_is_the_maximum_allowed(client: TestClient):
    response = await client.get("/api/v1/tenants?limit=200", headers=bearer(ADMIN))
    assert response.status == 200


async def test_a_tenant_token_lists_only_its_own_tenant(client: TestClient, state: MemoryState):
    for tenant_id in ("acme", "globex", "initech"):
        await state.submit_tenant(tenant_event(tenant_id))
    viewer = token(("tenant-viewer",), "globex", sub="bob")
    body = await (await client.get("/api/v1/tenants", headers=bearer(viewer))).json()
    assert [t["tenant_id"] for t in body["items"]] == ["globex"] and body["total"] == 1


# -- writes ------------------------------------------------------------------------------------------


async def test_put_quota_sends_the_change(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    new = {"cpu_cores": 16, "memory_gib": 64, "gpus": 2, "storage_gib": 500}
    response = await client.put("/api/v1/tenants/acme/quota", json=new, headers=bearer(ADMIN))
    assert response.status == 202
    body = await response.json()
    assert body["requested"] == new and body["quota_url"] == "/api/v1/tenants/acme/quota"
    assert response.headers["Location"] == body["quota_url"]
    quota = await state.quota("acme")
    assert quota is not None and quota.limits.model_dump() == new and quota.updated_by == "root-admin"


async def test_an_admin_lifts_an_over_quota_mark_and_it_is_audited_and_announced(
    client: TestClient, state: MemoryState,
):
    await state.submit_tenant(tenant_event("acme"))
    at = tenant_event("acme").occurred_at
    for event_id, resource in (("q1", QuotaResource.CPU_CORES), ("q2", QuotaResource.GPUS)):
        state.quota_exceeded(QuotaExceeded(event_id=event_id, tenant_id="acme", occurred_at=at, resource=resource,
                                           used=5, limit=4))
    before = await state.quota("acme")
    assert before is not None
    state.audit_log.clear()
    response = await client.delete("/api/v1/tenants/acme/quota/over-quota/cpu_cores", headers=bearer(ADMIN))
    assert response.status == 202
    body = await response.json()
    assert body == {"tenant_id": "acme", "resource": "cpu_cores", "status": "accepted",
                    "quota_url": "/api/v1/tenants/acme/quota"}
    assert response.headers["Location"] == body["quota_url"]
    after = await state.quota("acme")
    assert after is not None and list(after.over_quota) == [QuotaResource.GPUS]  # the other mark stays
    assert after.limits == before.limits  # the quota itself is unchanged
    [announced] = [e.value for e in state.emitted if getattr(e.value, "kind", None) == "quota-enforcement"
                   and getattr(e.value, "status", None) == "under-quota"]
    assert announced.resource == "cpu_cores" and announced.detail["lifted_by"] == "admin"
    assert announced.detail["actor"] == "root-admin"
    [record] = state.audit_log
    assert record.action == "lift-over-quota" and record.detail["resource"] == "cpu_cores"
    assert record.outcome == "accepted"

    again = await client.delete("/api/v1/tenants/acme/quota/over-quota/cpu_cores", headers=bearer(ADMIN))
    assert again.status == 404 and (await error_of(again))["code"] == "over-quota-mark-not-found"


async def test_an_admin_releases_a_quarantined_workload(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    at = tenant_event("acme").occurred_at
    for event_id, workload in (("a1", "api"), ("a2", "etl")):
        state.record_anomaly(ResourceAnomaly(event_id=event_id, tenant_id="acme", occurred_at=at,
                                             resource_type="deployment", resource_id=workload,
                                             anomaly_type="egress-spike", severity=Severity.CRITICAL, value=9.0))
    state.audit_log.clear()
    response = await client.delete("/api/v1/tenants/acme/quarantine/api", headers=bearer(ADMIN))
    assert response.status == 202
    body = await response.json()
    assert body == {"tenant_id": "acme", "resource_id": "api", "status": "accepted",
                    "tenant_url": "/api/v1/tenants/acme"}
    assert response.headers["Location"] == body["tenant_url"]
    log = await state.anomalies("acme")
    assert log is not None and log.quarantined == ["etl"]
    [announced] = [e.value for e in state.emitted if getattr(e.value, "status", None) == "released"]
    assert announced.resource == "api" and announced.detail == {"released_by": "admin", "actor": "root-admin"}
    [record] = state.audit_log
    assert record.action == "release-quarantine" and record.detail["resource_id"] == "api"

    again = await client.delete("/api/v1/tenants/acme/quarantine/api", headers=bearer(ADMIN))
    assert again.status == 404
    error = await error_of(again)
    assert error["code"] == "not-quarantined" and error["details"]["quarantined"] == ["etl"]
    ghost = await client.delete("/api/v1/tenants/ghost/quarantine/api", headers=bearer(ADMIN))
    assert ghost.status == 404 and (await error_of(ghost))["code"] == "tenant-not-found"


@pytest.mark.parametrize("resource", ["storage_gib", "pods", "x" * 300])
async def test_lifting_a_mark_that_is_not_there_is_404(client: TestClient, state: MemoryState, resource: str):
    await state.submit_tenant(tenant_event("acme"))
    response = await client.delete(f"/api/v1/tenants/acme/quota/over-quota/{resource}", headers=bearer(ADMIN))
    assert response.status == 404
    error = await error_of(response)
    assert error["code"] == "over-quota-mark-not-found" and error["details"]["marked"] == []
    ghost = await client.delete("/api/v1/tenants/ghost/quota/over-quota/cpu_cores", headers=bearer(ADMIN))
    assert ghost.status == 404 and (await error_of(ghost))["code"] == "tenant-not-found"


@pytest.mark.parametrize(
    "body",
    [
        {"cpu_cores": -1, "memory_gib": 1, "gpus": 0, "storage_gib": 1},
        {"cpu_cores": 1, "memory_gib": 1, "gpus": 0},
        {"cpu_cores": 1, "memory_gib": 1, "gpus": 0, "storage_gib": 1, "pods": 3},
        {"cpu_cores": "lots", "memory_gib": 1, "gpus": 0, "storage_gib": 1},
    ],
)
async def test_invalid_quota_is_422(client: TestClient, state: MemoryState, body: dict[str, Any]):
    await state.submit_tenant(tenant_event("acme"))
    response = await client.put("/api/v1/tenants/acme/quota", json=body, headers=bearer(ADMIN))
    assert response.status == 422
    assert (await error_of(response))["details"]["errors"]


@pytest.mark.parametrize(("query", "purge"), [("", False), ("?purge=true", True), ("?purge=false", False)])
async def test_delete_sends_the_deletion(client: TestClient, state: MemoryState, query: str, purge: bool):
    await state.submit_tenant(tenant_event("acme"))
    response = await client.delete(f"/api/v1/tenants/acme{query}", headers=bearer(ADMIN))
    assert response.status == 202
    body = await response.json()
    assert body["purge"] is purge and body["status_url"] == "/api/v1/tenants/acme/provisioning-status"
    assert response.headers["Location"] == body["status_url"]
    tenant = await state.tenant("acme")
    assert tenant is not None and tenant.state is TenantState.DELETING
    status = await (await client.get(body["status_url"], headers=bearer(ADMIN))).json()
    assert {r["status"] for r in status["resources"].values()} == {"deleting"}


# -- error bodies ------------------------------------------------------------------------------------


async def test_unknown_routes_and_methods_get_the_common_error_body(client: TestClient):
    response = await client.get("/api/v1/nothing-here", headers=bearer(ADMIN))
    assert response.status == 404
    assert (await error_of(response))["code"] == "not-found"

    response = await client.get("/nothing-here")
    assert response.status == 404
    assert (await error_of(response))["code"] == "not-found"

    response = await client.patch("/api/v1/tenants/acme", json={}, headers=bearer(ADMIN))
    assert response.status == 405
    error = await error_of(response)
    assert error["code"] == "method-not-allowed"
    assert error["details"]["allowed_methods"] == ["DELETE", "GET"]
    assert response.headers["Allow"] == "DELETE, GET"


class ExplodingReader(MemoryState):
    async def tenant(self, tenant_id: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("database password is hunter2")


async def test_unexpected_errors_are_500_without_internals(caplog: pytest.LogCaptureFixture):
    from aiohttp.test_utils import TestServer

    from tests.web.conftest import SECRET
    from web.auth import Authenticator
    from web.server import build_root_app

    state = ExplodingReader()
    app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/v1/tenants/acme", headers=bearer(ADMIN))
        assert response.status == 500
        text = await response.text()
        assert "hunter2" not in text and "RuntimeError" not in text and "Traceback" not in text
        error = await error_of(response)
        assert error["code"] == "internal-error"
        assert error["details"]["error_id"] in caplog.text  # the log line carries the same id
        problem = await response.json(content_type=None)  # and the problem names that occurrence
        assert problem["instance"].replace("-", "") == f"urn:uuid:{error['details']['error_id']}"

        response = await client.delete("/api/v1/tenants/acme", headers=bearer(ADMIN))
        assert response.status == 500
        [record] = state.audit_log
        assert record.outcome == "failed" and record.detail["error_id"]
        assert "hunter2" not in record.model_dump_json()


class BrokenGateway(MemoryState):
    async def submit_tenant(self, event: TenantCreated) -> None:
        raise ConnectionError("kafka is down")


async def test_a_command_that_cannot_be_sent_is_503_and_audited_as_failed():
    from aiohttp.test_utils import TestServer

    from tests.web.conftest import SECRET
    from web.auth import Authenticator
    from web.server import build_root_app

    state = BrokenGateway()
    app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None)
    async with TestClient(TestServer(app)) as client:
        response = await provision(client)
        assert response.status == 503
        assert (await error_of(response))["code"] == "command-not-submitted"
        assert "kafka" not in await response.text()
        [record] = state.audit_log
        assert record.outcome == "failed" and record.action == "provision-tenant" and record.tenant_id == "acme"


async def test_api_is_503_while_the_worker_is_not_ready(client: TestClient, readiness: FakeReadiness):
    readiness.ready, readiness.reason = False, "tables are being recovered from their changelogs"
    response = await client.get("/api/v1/tenants", headers=bearer(ADMIN))
    assert response.status == 503
    error = await error_of(response)
    assert error["code"] == "not-ready" and "recovered" in error["message"]
    assert response.headers["Retry-After"] == "5"
    readiness.ready = True
    assert (await client.get("/api/v1/tenants", headers=bearer(ADMIN))).status == 200
    readiness.error = RuntimeError("assignment is None")
    response = await client.get("/api/v1/tenants", headers=bearer(ADMIN))
    assert response.status == 503 and "assignment" not in await response.text()


async def test_a_too_large_body_gets_the_common_error_body(client: TestClient):
    body = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await client.post(
        "/api/v1/provision", data=body, headers={**bearer(ADMIN), "Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await error_of(response))["code"] == "payload-too-large"


def test_the_provision_body_has_the_fields_and_rules_of_the_tenant_created_event():
    from web.models import ProvisionRequest

    event_schema = TenantCreated.model_json_schema()
    request_schema = ProvisionRequest.model_json_schema()
    fields = set(TenantCreated.model_fields) - {"event_id", "occurred_at"}
    assert set(ProvisionRequest.model_fields) == fields
    for name in fields - {"tier"}:
        assert request_schema["properties"][name] == event_schema["properties"][name], name
    # the tier may be left out: only a platform-admin chooses one (tests/web/test_tier_escalation.py)
    assert set(request_schema["required"]) == set(event_schema["required"]) - {"event_id", "occurred_at", "tier"}


async def test_long_unknown_tenant_ids_are_not_echoed_in_full(client: TestClient, state: MemoryState):
    long_id = "x" * 5000
    response = await client.delete(f"/api/v1/tenants/{long_id}", headers=bearer(ADMIN))
    assert response.status == 404
    assert len(await response.text()) < 1000
    [record] = state.audit_log
    assert record.tenant_id is not None and len(record.tenant_id) == 64


# -- found by the OpenAPI fuzzer (tests/web/test_openapi_fuzz.py) ------------------------------------


@pytest.mark.parametrize("query", ["dry-run=true", "dryrun=true", "dry_run=true&verbose=1"])
async def test_an_unknown_query_parameter_is_refused_and_nothing_is_provisioned(
    client: TestClient, state: MemoryState, query: str
):
    response = await client.post(f"/api/v1/provision?{query}", json=PROVISION, headers=bearer(ADMIN))
    assert response.status == 400 and (await error_of(response))["code"] == "invalid-query"
    assert state.submitted == []


@pytest.mark.parametrize("path", ["/api/v1/tenants?page=2", "/api/v1/tenants/acme?purge=true"])
async def test_unknown_query_parameters_are_refused_on_reads_and_deletes(client: TestClient, state: MemoryState,
                                                                          path: str):
    await state.submit_tenant(tenant_event("acme"))
    method = "DELETE" if "purge" in path else "GET"
    response = await client.request(method, path.replace("?purge=true", "?purge=yes&x=1"), headers=bearer(ADMIN))
    assert response.status == 400 and (await error_of(response))["code"] == "invalid-query"


@pytest.mark.parametrize("path", ["/api/v1/tenants?limit=1&limit=500", "/api/v1/provision?dry_run=true&dry_run=false"])
async def test_a_query_parameter_given_twice_is_refused(client: TestClient, state: MemoryState, path: str):
    """Which of two values would count is a guess (found by the fuzzer: ?workload=false&workload=false)."""
    method = "POST" if "provision" in path else "GET"
    response = await client.request(method, path, json=PROVISION if method == "POST" else None, headers=bearer(ADMIN))
    assert response.status == 400 and (await error_of(response))["code"] == "invalid-query"
    assert state.submitted == []


@pytest.mark.parametrize("wrong", [{"cpu_cores": False}, {"gpus": True}, {"memory_gib": "32"}, {"cpu_cores": "8"},
                                   {"gpus": 1.5}])
async def test_a_body_number_must_be_a_json_number(client: TestClient, state: MemoryState, wrong: dict[str, Any]):
    """false is not 0 and "8" is not 8: the document says number/integer, and a quota of false cores is a typo."""
    await state.submit_tenant(tenant_event("acme"))
    body = {"cpu_cores": 8, "memory_gib": 32, "gpus": 1, "storage_gib": 200, **wrong}
    response = await client.put("/api/v1/tenants/acme/quota", json=body, headers=bearer(ADMIN))
    assert response.status == 422 and (await error_of(response))["code"] == "validation-error"


async def test_an_integer_written_with_a_zero_fraction_is_an_integer(client: TestClient, state: MemoryState):
    """JSON Schema's integer includes 2.0; strict validation must not refuse it."""
    await state.submit_tenant(tenant_event("acme"))
    body = {"cpu_cores": 8, "memory_gib": 32.0, "gpus": 2.0, "storage_gib": 200}
    response = await client.put("/api/v1/tenants/acme/quota", json=body, headers=bearer(ADMIN))
    assert response.status == 202, await response.text()
    assert (await response.json())["requested"]["gpus"] == 2


async def test_a_provision_body_keeps_its_json_types(client: TestClient, state: MemoryState):
    response = await provision(client, {**PROVISION, "name": 12345})
    assert response.status == 422 and state.submitted == []
    ok = await provision(client, {**PROVISION, "tier": "standard", "owner_user_id": "user-42"})
    assert ok.status == 202 and state.submitted[0].tier is Tier.STANDARD


# -- GET /tenants/{id}/users ---------------------------------------------------------------------------


async def test_users_are_listed_paged_with_their_access_status_and_only_for_the_tenant(
    client: TestClient, state: MemoryState
):
    for tenant_id in ("acme", "globex"):
        await state.submit_tenant(tenant_event(tenant_id))
    now = datetime.now(UTC)
    for i, user_id in enumerate(["carol", "alice", "bob", "dave"]):
        handle_user_created(UserCreated(event_id=f"u{i}", tenant_id="acme", occurred_at=now, user_id=user_id,
                                        email=f"{user_id}@acme.io", roles=["editor"]), state.stores, now)
    handle_user_created(UserCreated(event_id="g1", tenant_id="globex", occurred_at=now, user_id="gina",
                                    email="g@globex.io"), state.stores, now)
    handle_user_deleted(UserDeleted(event_id="d1", tenant_id="acme", occurred_at=now + timedelta(seconds=1),
                                    user_id="dave"), state.stores, now)

    page = await (await client.get("/api/v1/tenants/acme/users?offset=1&limit=2", headers=bearer(ADMIN))).json()
    assert page["total"] == 4 and page["offset"] == 1 and page["limit"] == 2
    assert [u["user_id"] for u in page["items"]] == ["bob", "carol"]
    assert all(u["state"] == "active" and u["overall"] == "in-progress" for u in page["items"])
    assert all(set(u["resources"]) == set(USER_RESOURCES) for u in page["items"])
    last = await (await client.get("/api/v1/tenants/acme/users?offset=3", headers=bearer(ADMIN))).json()
    assert [(u["user_id"], u["state"]) for u in last["items"]] == [("dave", "deleting")]

    own = token(("tenant-viewer",), "acme", sub="alice")
    assert (await client.get("/api/v1/tenants/acme/users", headers=bearer(own))).status == 200
    other = await client.get("/api/v1/tenants/globex/users", headers=bearer(own))
    assert other.status == 403
    bad = await client.get("/api/v1/tenants/acme/users?limit=201", headers=bearer(ADMIN))
    assert bad.status == 400
    ghost = await client.get("/api/v1/tenants/ghost/users", headers=bearer(ADMIN))
    assert ghost.status == 404
