"""/api/v1/scaling: policies (validated, tenant-scoped, audited) and decisions, over an in-process engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from pipeline.events.models import ResourceMetrics, ScalingRequest, Tier
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.engine_io import EngineConfig, Tables
from pipeline.scaling.records import (
    ApplyReport,
    ModelSnapshot,
    Observation,
    PolicySet,
    StoredDecision,
    WorkloadIndex,
    WorkloadScaling,
)
from pipeline.typed_table import TypedTable
from tests.web.conftest import ADMIN, SECRET, FakeReadiness, bearer, error_of, tenant_event, token
from tests.web.memory_state import MemoryState
from web.auth import Authenticator
from web.scaling import EngineBackend, live_update, publish_decisions, scaling_operations
from web.server import build_root_app
from web.state import LiveUpdate

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TT = {"policy_id": "cpu", "tenant_id": "acme", "workload": "api", "kind": "target_tracking",
      "target_utilization": 0.5, "max_replicas": 10}
ACME_ADMIN = token(("tenant-admin",), "acme", sub="acme-admin")
ACME_VIEWER = token(("tenant-viewer",), "acme", sub="acme-viewer")


def make_engine(state: MemoryState) -> ScalingEngine:
    tables = Tables(
        policies=TypedTable({}, PolicySet), state=TypedTable({}, WorkloadScaling),
        decisions=TypedTable({}, StoredDecision), index=TypedTable({}, WorkloadIndex),
        snapshots=TypedTable({}, ModelSnapshot), tenants=state.stores.tenants, quotas=state.stores.quotas,
    )
    return ScalingEngine(EngineConfig(window_seconds=1800), tables)


class RemoteBackend(EngineBackend):
    """Says every tenant belongs to another worker (to test forwarding)."""

    def __init__(self, engine: ScalingEngine, owner: URL) -> None:
        super().__init__(engine)
        self.owner_url = owner

    def owner(self, tenant_id: str) -> URL | None:
        return self.owner_url


@pytest.fixture
def engine(state: MemoryState) -> ScalingEngine:
    return make_engine(state)


@pytest.fixture
async def api(state: MemoryState, engine: ScalingEngine) -> AsyncIterator[TestClient]:
    for tenant_id, tier in (("acme", Tier.STANDARD), ("globex", Tier.ENTERPRISE)):
        await state.submit_tenant(tenant_event(tenant_id, tier))
    app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(),
                         extra_operations=scaling_operations(EngineBackend(engine), state))
    async with TestClient(TestServer(app)) as client:
        yield client


async def post(client: TestClient, body: Any, auth: str = ADMIN) -> Any:
    return await client.post("/api/v1/scaling/policies", json=body, headers=bearer(auth))


async def listing(client: TestClient, query: str, auth: str = ADMIN) -> Any:
    response = await client.get(f"/api/v1/scaling/policies{query}", headers=bearer(auth))
    assert response.status == 200, await response.text()
    return await response.json()


# -- policies ------------------------------------------------------------------------------------------------


async def test_a_created_policy_is_listed_read_replaced_and_deleted(api: TestClient, state: MemoryState) -> None:
    response = await post(api, TT)
    assert response.status == 202
    body = await response.json()
    assert body["op"] == "create" and body["policy"]["behavior"]["scale_down"]["stabilization_window_seconds"] == 300
    assert body["policy_url"] == "/api/v1/scaling/policies/cpu?tenant_id=acme"
    assert response.headers["Location"] == body["policy_url"]
    page = await listing(api, "?tenant_id=acme")
    assert page["total"] == 1 and page["items"][0]["policy_id"] == "cpu"
    one = await api.get(body["policy_url"], headers=bearer(ADMIN))
    assert (await one.json())["policy"]["target_utilization"] == 0.5

    replaced = await api.put("/api/v1/scaling/policies/cpu", headers=bearer(ADMIN),
                             json={k: v for k, v in {**TT, "target_utilization": 0.7}.items() if k != "policy_id"})
    assert replaced.status == 202 and (await replaced.json())["op"] == "replace"
    assert replaced.headers["Location"] == body["policy_url"]
    assert (await listing(api, "?tenant_id=acme"))["items"][0]["target_utilization"] == 0.7

    deleted = await api.delete("/api/v1/scaling/policies/cpu?tenant_id=acme", headers=bearer(ADMIN))
    assert deleted.status == 202
    assert deleted.headers["Location"] == body["policy_url"]  # where the deletion shows (a 404 once applied)
    assert (await listing(api, "?tenant_id=acme"))["total"] == 0
    again = await api.delete("/api/v1/scaling/policies/cpu?tenant_id=acme", headers=bearer(ADMIN))
    assert again.status == 404 and (await error_of(again))["code"] == "policy-not-found"

    actions = [(r.action, r.tenant_id, r.outcome) for r in state.audit_log]
    assert actions == [("create-scaling-policy", "acme", "accepted"), ("put-scaling-policy", "acme", "accepted"),
                       ("delete-scaling-policy", "acme", "accepted"), ("delete-scaling-policy", "acme", "refused")]


@pytest.mark.parametrize(("change", "loc"), [
    ({"target_utilization": 3}, ["target_tracking", "target_utilization"]),
    ({"kind": "telepathic"}, []),
    ({"min_replicas": 5, "max_replicas": 2}, ["target_tracking"]),
    ({"kind": "scheduled", "windows": [{"cron": "61 * * * *", "duration_minutes": 5, "desired_replicas": 2}]},
     ["scheduled", "windows", "0", "cron"]),
    ({"kind": "scheduled", "windows": [{"cron": "0 9 * * *", "timezone": "Mars/Olympus", "duration_minutes": 5,
                                        "min_replicas": 1}]}, ["scheduled", "windows", "0", "timezone"]),
    ({"kind": "cost_aware", "capacity_classes": [{"name": "spot", "price_per_unit_hour": 1}]}, ["cost_aware"]),
    ({"surprise": True}, ["target_tracking", "surprise"]),
])
async def test_invalid_policies_are_refused_with_every_problem(api: TestClient, change: dict[str, Any],
                                                               loc: list[str]) -> None:
    response = await post(api, {**TT, **change})
    assert response.status == 422
    error = await error_of(response)
    assert error["code"] == "validation-error" and error["details"]["errors"]
    if loc:
        assert any(e["loc"][: len(loc)] == loc for e in error["details"]["errors"]), error


async def test_conflicts_unknown_tenants_and_mismatched_ids(api: TestClient) -> None:
    assert (await post(api, TT)).status == 202
    conflict = await post(api, TT)
    assert conflict.status == 409 and (await error_of(conflict))["code"] == "policy-exists"
    ghost = await post(api, {**TT, "tenant_id": "ghost"})
    assert ghost.status == 404 and (await error_of(ghost))["code"] == "tenant-not-found"
    mismatch = await api.put("/api/v1/scaling/policies/other", json=TT, headers=bearer(ADMIN))
    assert mismatch.status == 422
    malformed = await api.post("/api/v1/scaling/policies", data=b"{nope", headers=bearer(ADMIN))
    assert malformed.status == 400 and (await error_of(malformed))["code"] == "malformed-json"
    missing = await api.delete("/api/v1/scaling/policies/cpu", headers=bearer(ADMIN))
    assert missing.status == 400  # a platform admin must name the tenant


async def test_tenant_tokens_see_and_change_only_their_own_policies(api: TestClient) -> None:
    assert (await post(api, {**TT, "tenant_id": "globex"})).status == 202
    mine = {k: v for k, v in TT.items() if k != "tenant_id"}  # a tenant token may leave tenant_id out
    assert (await post(api, mine, auth=ACME_ADMIN)).status == 202
    page = await listing(api, "", auth=ACME_ADMIN)
    assert [(p["tenant_id"], p["policy_id"]) for p in page["items"]] == [("acme", "cpu")]
    assert (await listing(api, "", auth=ACME_VIEWER))["total"] == 1
    other = await api.get("/api/v1/scaling/policies?tenant_id=globex", headers=bearer(ACME_ADMIN))
    assert other.status == 403
    assert (await post(api, {**TT, "tenant_id": "globex", "policy_id": "x"}, auth=ACME_ADMIN)).status == 403
    assert (await post(api, {**TT, "policy_id": "y"}, auth=ACME_VIEWER)).status == 403
    delete_other = await api.delete("/api/v1/scaling/policies/cpu?tenant_id=globex", headers=bearer(ACME_ADMIN))
    assert delete_other.status == 403
    no_token = await api.get("/api/v1/scaling/policies")
    assert no_token.status == 401
    everything = await listing(api, "")
    assert sorted((p["tenant_id"], p["policy_id"]) for p in everything["items"]) == [("acme", "cpu"),
                                                                                   ("globex", "cpu")]
    assert (await listing(api, "?workload=nope"))["total"] == 0


# -- decisions -------------------------------------------------------------------------------------------------


def feed(engine: ScalingEngine, hours: int, cores: float) -> None:
    """Samples every 15 minutes; the Deployment (1 replica at first) follows what the engine asks."""
    replicas = 1
    for step in range(hours * 4 + 1):
        at = T0 + timedelta(minutes=15 * step)
        outcome = engine.on_sample(ResourceMetrics(event_id=f"m{step}", tenant_id="acme", occurred_at=at,
                                                   workload="api", cpu_cores=cores, memory_gib=1, gpus=0))
        while outcome and outcome.applies:
            request = outcome.applies[-1]
            replicas = request.replicas if request.replicas is not None else replicas
            outcome = engine.on_applied(ApplyReport(
                tenant_id="acme", workload="api", reported_at=at, requested_replicas=request.replicas,
                observation=Observation(exists=True, replicas=replicas, cpu_per_replica=1.0,
                                        observed_at=datetime.now(UTC))))


async def test_decisions_come_back_newest_first_with_their_explanation(api: TestClient,
                                                                      engine: ScalingEngine) -> None:
    assert (await post(api, TT)).status == 202
    feed(engine, 3, 2.0)
    response = await api.get("/api/v1/scaling/decisions?tenant_id=acme&limit=2", headers=bearer(ADMIN))
    assert response.status == 200
    body = await response.json()
    assert body["tenant_id"] == "acme" and body["total"] >= 5 and len(body["items"]) == 2
    newest, older = body["items"]
    assert newest["decision"]["at"] > older["decision"]["at"]
    assert newest["decision"]["forecast"]["quantiles"].keys() >= {"0.1", "0.9"}
    assert "policy:cpu" in newest["decision"]["explanation"] and newest["decision"]["desired_replicas"] == 4
    assert newest["model"]["observations"] > 0
    assert (await (await api.get("/api/v1/scaling/decisions", headers=bearer(ACME_VIEWER))).json())["total"] >= 5
    assert (await api.get("/api/v1/scaling/decisions", headers=bearer(ADMIN))).status == 400
    forbidden = await api.get("/api/v1/scaling/decisions?tenant_id=globex", headers=bearer(ACME_VIEWER))
    assert forbidden.status == 403
    filtered = await api.get("/api/v1/scaling/decisions?tenant_id=acme&workload=other", headers=bearer(ADMIN))
    assert (await filtered.json())["items"] == []


async def test_scale_decisions_are_published_to_the_dashboard(api: TestClient, engine: ScalingEngine) -> None:
    published: list[LiveUpdate] = []
    engine.tables.decisions.listeners.append(publish_decisions(published.append))
    assert (await post(api, TT)).status == 202
    feed(engine, 2, 2.0)
    assert published and all(u.kind == "scaling" and u.tenant_id == "acme" for u in published)
    first = published[0].data
    assert first["kind"] == "scaling-decision" and first["workload"] == "api" and first["desired_replicas"] == 4
    assert first["status"] == "accepted" and "policy:cpu" in first["reason"]
    assert any(live_update(d) is None for d in engine.recent_decisions("acme"))  # holds are not shown


async def test_reads_are_forwarded_to_the_worker_owning_the_tenant(state: MemoryState, engine: ScalingEngine) -> None:
    await state.submit_tenant(tenant_event("acme"))
    auth = Authenticator(hs256_secret=SECRET)
    owner_app = build_root_app(state, state, auth, FakeReadiness(),
                               extra_operations=scaling_operations(EngineBackend(engine), state))
    async with TestClient(TestServer(owner_app)) as owner:
        assert (await post(owner, TT)).status == 202
        other_engine = make_engine(state)  # another worker: its own (empty) tables
        front_app = build_root_app(state, state, auth, FakeReadiness(), extra_operations=scaling_operations(
            RemoteBackend(other_engine, URL(str(owner.make_url("/")))), state))
        async with TestClient(TestServer(front_app)) as front:
            page = await listing(front, "?tenant_id=acme")
            assert [p["policy_id"] for p in page["items"]] == ["cpu"]  # served by the owner
            conflict = await post(front, TT)  # the existence check reads the owner's policies
            assert conflict.status == 409
            assert (await front.get("/api/v1/scaling/decisions?tenant_id=acme", headers=bearer(ADMIN))).status == 200


async def test_the_openapi_document_lists_the_scaling_routes(api: TestClient) -> None:
    document = await (await api.get("/api/v1/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/scaling/policies"]) == {"get", "post"}
    assert set(paths["/scaling/policies/{policy_id}"]) == {"get", "put", "delete"}
    assert "get" in paths["/scaling/decisions"]
    body = paths["/scaling/policies"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"]["kind"] == "predictive"
    assert "PolicyDocument" in document["components"]["schemas"]


# -- found by the OpenAPI fuzzer (tests/web/test_openapi_fuzz.py) ------------------------------------


def test_the_document_requires_the_kind_of_every_policy_variant() -> None:
    """Without ``kind`` the server cannot pick the policy's model (422), so the document must require it."""
    from web.openapi import openapi_document

    state = MemoryState()
    document = openapi_document(scaling_operations(EngineBackend(make_engine(state)), state))
    schemas = document["components"]["schemas"]
    mapping = schemas["PolicyDocument"]["discriminator"]["mapping"]
    assert len(mapping) == 4
    for ref in mapping.values():
        assert "kind" in schemas[ref.rsplit("/", 1)[-1]]["required"], ref


@pytest.mark.parametrize("path", ["/api/v1/scaling/decisions", "/api/v1/scaling/policies/cpu"])
async def test_a_platform_admin_without_tenant_id_gets_a_code_of_its_own(api: TestClient, path: str) -> None:
    """tenant_id is optional in the document (a tenant token leaves it out): its absence is not a schema error."""
    response = await api.get(path, headers=bearer(ADMIN))
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "tenant-required" and error["details"] == {"parameter": "tenant_id"}


@pytest.mark.parametrize("wrong", [{"max_replicas": True}, {"target_utilization": "0.5"}, {"enabled": 1}])
async def test_a_policy_keeps_its_json_types(api: TestClient, wrong: dict[str, Any]) -> None:
    response = await post(api, {**TT, **wrong})
    assert response.status == 422 and (await error_of(response))["code"] == "validation-error"


async def test_a_policy_integer_may_have_a_zero_fraction_and_unknown_query_parameters_are_refused(
    api: TestClient,
) -> None:
    assert (await post(api, {**TT, "max_replicas": 10.0})).status == 202
    response = await api.get("/api/v1/scaling/decisions?tenant_id=acme&tenant=acme", headers=bearer(ADMIN))
    assert response.status == 400 and (await error_of(response))["code"] == "invalid-query"


async def test_a_policy_pasted_with_hpa_names_is_accepted_and_shown_in_snake_case(api: TestClient) -> None:
    document = {"policy_id": "hpa", "tenant_id": "acme", "workload": "api", "kind": "target_tracking",
                "averageUtilization": 60, "minReplicas": 2, "maxReplicas": 8,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 90}}}
    response = await post(api, document)
    assert response.status == 202, await response.text()
    one = await api.get(response.headers["Location"], headers=bearer(ADMIN))
    policy = (await one.json())["policy"]
    assert (policy["target_utilization"], policy["min_replicas"], policy["max_replicas"]) == (0.6, 2, 8)
    assert policy["behavior"]["scale_down"]["stabilization_window_seconds"] == 90
    refused = await post(api, {**document, "policy_id": "keda", "cooldownPeriod": 300})
    assert refused.status == 422
    assert "cooldownPeriod (KEDA) has no equivalent" in (await error_of(refused))["details"]["errors"][0]["msg"]
async def test_a_scaling_requests_decision_is_shown_even_when_it_holds(api: TestClient, engine: ScalingEngine) -> None:
    published: list[LiveUpdate] = []
    engine.tables.decisions.listeners.append(publish_decisions(published.append))
    engine.on_request(ScalingRequest(event_id="r-hold", tenant_id="acme", occurred_at=T0, workload="api",
                                     desired_replicas=2, reason="already there"))
    engine.on_applied(ApplyReport(tenant_id="acme", workload="api", reported_at=T0, observation=Observation(
        exists=True, replicas=2, cpu_per_replica=1.0, observed_at=datetime.now(UTC))))
    [update] = published  # a hold the requester still wants to see answered
    assert update.data["action"] == "hold" and update.data["cause_event_id"] == "r-hold"
    assert update.data["trigger"] == "request" and update.data["status"] == "unchanged"
    response = await api.get("/api/v1/scaling/decisions?tenant_id=acme", headers=bearer(ACME_VIEWER))
    [item] = (await response.json())["items"]
    assert item["cause_event_id"] == "r-hold" and item["trigger"] == "request"
