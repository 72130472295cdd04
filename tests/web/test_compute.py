"""The /api/v1/compute routes over a real compute runtime (dict table, in-process STAND-IN engine)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipeline.compute.catalog import Offer, load_catalogs
from pipeline.compute.factory import catalog_paths
from pipeline.compute.lifecycle import ComputeRecord, ComputeState
from pipeline.compute.quota import ComputeQuotaRefused
from pipeline.compute.request_ids import idempotent_request_id
from pipeline.config import Settings
from pipeline.events.models import ComputeRequested, QuotaResource, Tier
from pipeline.tenants.models import OverQuota
from tests.pipeline.compute.support import RuntimeEnv, runtime_env
from tests.web.conftest import (
    ADMIN,
    SECRET,
    FakeReadiness,
    bearer,
    error_of,
    fixed_quota,
    next_event,
    tenant_event,
    token,
)
from tests.web.memory_state import MemoryState
from web.auth import Authenticator
from web.compute import ComputeApi, LocalCompute, operations
from web.server import build_root_app
from web.state import LiveUpdate

CHEAPEST_4X_H100 = "lambda/asia-northeast-1/gpu_4x_h100_sxm5/on_demand"
ACME_ADMIN = token(("tenant-admin",), "acme", sub="acme-admin")
ACME_VIEWER = token(("tenant-viewer",), "acme", sub="acme-viewer")
OTHER_ADMIN = token(("tenant-admin",), "other", sub="other-admin")


def gpu_body(tenant: str = "acme", count: int = 4, **kw: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "resources": {"gpu": {"type": "H100", "count": count}}, "duration_hours": 6,
            "purpose": "training", **kw}


@dataclass
class Env:
    client: TestClient[Any, Any]
    compute: RuntimeEnv
    state: MemoryState

    async def post(self, body: dict[str, Any], auth: str = ACME_ADMIN, query: str = "") -> Any:
        return await self.client.post(f"/api/v1/compute/provision{query}", json=body, headers=bearer(auth))

    async def get(self, path: str, auth: str = ACME_ADMIN) -> Any:
        return await self.client.get(f"/api/v1/compute{path}", headers=bearer(auth))

    def row(self, capacity: dict[str, Any], provider: str, region: str, resource: str) -> dict[str, Any]:
        row: dict[str, Any] = next(r for r in capacity["rows"]
                                   if (r["provider"], r["region"], r["resource_type"]) == (provider, region, resource))
        return row


@pytest.fixture(scope="module")
def offers() -> list[Offer]:
    return load_catalogs(catalog_paths(Settings(compute_catalog_dir=None)))


class WorkerLikeServer(TestServer):
    """A test server whose handlers run on when their client disconnects, as in the worker (Faust's aiohttp
    driver keeps aiohttp's default); the plain TestServer cancels them."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return web.AppRunner(self.app, **{**kwargs, "handler_cancellation": False})


@pytest.fixture
async def env(offers: list[Offer]) -> AsyncIterator[Env]:
    async with make_env(offers, TestServer) as built:
        yield built


@contextlib.asynccontextmanager
async def make_env(offers: list[Offer], server: type[TestServer], **settings: Any) -> AsyncIterator[Env]:
    state = MemoryState(quota_for_tier=fixed_quota)
    await state.submit_tenant(tenant_event("acme", Tier.ENTERPRISE))  # 4 GPUs
    await state.submit_tenant(tenant_event("small", Tier.STANDARD))  # no GPU
    await state.submit_tenant(tenant_event("thrifty", Tier.ENTERPRISE))
    await state.submit_tenant(tenant_event("tiny", Tier.FREE))  # 1 core, 2 GiB, no GPU

    def quota_gpus(tenant_id: str) -> int | None:
        quota = state.stores.quotas.get(tenant_id)
        return quota.limits.gpus if quota is not None else None

    async with runtime_env(offers, quota_gpus=quota_gpus, quota_records=state.stores.quotas.get,
                           compute_tenant_policies={"thrifty": {"budget_usd": 50}}, **settings) as compute:
        local = LocalCompute(compute.runtime, state.stores.tenants.get)
        app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None,
                             extra_operations=operations(ComputeApi(local, None, provision_wait_s=10)))
        async with TestClient(server(app)) as client:
            yield Env(client, compute, state)


async def test_a_gpu_request_runs_on_the_cheapest_offer_and_returns_its_secrets_once(env: Env) -> None:
    response = await env.post(gpu_body())
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["state"] == "running" and body["offer_id"] == CHEAPEST_4X_H100 and body["attempts"] == 1
    access = body["access"]
    assert access["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert access["jupyter_url"].endswith(f"token={access['jupyter_token']}")
    request_id = body["request_id"]
    assert request_id.startswith("acme.") and body["status_url"] == f"/api/v1/compute/provision/{request_id}"
    assert response.headers["Location"] == body["status_url"]  # the created request

    status = await (await env.get(f"/provision/{request_id}", ACME_VIEWER)).json()
    assert status["state"] == "running" and status["access_claimable"] is False
    assert status["decision"]["candidates"][0]["offer_id"] == CHEAPEST_4X_H100
    assert status["decision"]["excluded"]["gpu_type"] and status["attempts"][0]["outcome"] == "running"
    assert status["access"]["jupyter_url"].endswith("token=***")
    claim = await env.client.post(f"{body['access_url']}", headers=bearer(ACME_ADMIN))
    assert claim.status == 410 and (await error_of(claim))["code"] == "access-gone"

    deleted = await env.client.delete(body["status_url"], headers=bearer(ACME_ADMIN))
    assert deleted.status == 200 and (await deleted.json())["state"] == "terminated"
    assert "Location" not in deleted.headers  # done: nothing to follow
    assert env.compute.standin.engine.active_allocations() == []
    again = await env.client.delete(body["status_url"], headers=bearer(ACME_ADMIN))
    assert again.status == 200

    audit = [json.dumps(r.model_dump(mode="json")) for r in env.state.audit_log]
    assert [r.action for r in env.state.audit_log] == [
        "compute-provision", "compute-access-claim", "compute-terminate", "compute-terminate"]
    assert env.state.audit_log[0].outcome == "succeeded" and env.state.audit_log[0].tenant_id == "acme"
    assert env.state.audit_log[0].detail["request_id"] == request_id
    for secret in (access["ssh_private_key"], access["jupyter_token"]):
        assert all(secret not in line for line in audit)
        assert all(secret not in json.dumps(e.model_dump(mode="json")) for e in env.compute.events)


async def test_a_slow_allocation_answers_202_and_its_access_is_claimed_once(env: Env) -> None:
    env.compute.standin.engine.provisioning_s = 30.0
    response = await env.post(gpu_body(), query="?wait_seconds=0")
    assert response.status == 202
    body = await response.json()
    assert body["access"] is None and body["access_url"].endswith("/access")
    assert response.headers["Location"] == body["status_url"]  # where to follow the accepted request

    async def state_is(wanted: str) -> dict[str, Any]:
        while True:
            status: dict[str, Any] = await (await env.client.get(body["status_url"], headers=bearer(ADMIN))).json()
            if status["state"] == wanted:
                return status
            await asyncio.sleep(0.02)

    await state_is("provisioning")
    early = await env.client.post(body["access_url"], headers=bearer(ACME_ADMIN))
    assert early.status == 409 and (await error_of(early))["details"]["state"] == "provisioning"
    env.compute.standin.engine.provisioning_s = 0.0
    status = await state_is("running")
    assert status["access_claimable"] is True
    viewer = await env.client.post(body["access_url"], headers=bearer(ACME_VIEWER))
    assert viewer.status == 403  # reading secrets is a write-level operation
    claim = await env.client.post(body["access_url"], headers=bearer(ACME_ADMIN))
    assert claim.status == 200
    access = await claim.json()
    assert access["allocation_id"] == status["allocation_id"] and "PRIVATE KEY" in access["ssh_private_key"]
    second = await env.client.post(body["access_url"], headers=bearer(ADMIN))
    assert second.status == 410
    assert (await (await env.client.get(body["status_url"], headers=bearer(ADMIN))).json())["access_claimable"] is False


async def test_failover_on_injected_failures_is_visible_in_the_attempts(env: Env) -> None:
    env.compute.standin.engine.fail_next(1, "refused")
    env.compute.standin.engine.fail_next(1, "capacity")
    response = await env.post(gpu_body())
    assert response.status == 201
    body = await response.json()
    assert body["attempts"] == 3
    status = await (await env.client.get(body["status_url"], headers=bearer(ADMIN))).json()
    candidates = [c["offer_id"] for c in status["decision"]["candidates"]]
    assert [a["offer_id"] for a in status["attempts"]] == candidates[:3]
    assert [a["outcome"] for a in status["attempts"]] == ["refused", "capacity", "running"]
    assert body["offer_id"] == candidates[2]
    assert len(env.compute.standin.engine.active_allocations()) == 1


async def test_when_every_attempt_fails_the_answer_is_502_and_nothing_stays_allocated(env: Env) -> None:
    env.compute.standin.engine.fail_next(10, "timeout", hang_s=5)
    response = await env.post(gpu_body())
    assert response.status == 502
    error = await error_of(response)
    assert error["code"] == "allocation-failed" and len(error["details"]["attempts"]) == 4
    assert {a["outcome"] for a in error["details"]["attempts"]} == {"timeout"}
    assert env.compute.standin.engine.active_allocations() == []  # every timed-out allocation was released
    status = await (await env.client.get(error["details"]["status_url"], headers=bearer(ADMIN))).json()
    assert status["state"] == "failed" and all(a["released"] for a in status["attempts"])


@pytest.mark.parametrize(
    ("tenant", "body", "constraint", "says"),
    [
        ("thrifty", gpu_body("thrifty"), "budget", "remaining budget $50.00"),
        ("acme", gpu_body("acme", max_price_per_hour=1), "price_cap", ""),
        ("acme", gpu_body("acme", providers=["nowhere"]), "provider", ""),
    ],
)
async def test_impossible_requests_get_a_422_naming_the_constraint(
    env: Env, tenant: str, body: dict[str, Any], constraint: str, says: str
) -> None:
    response = await env.post(body, auth=ADMIN)
    assert response.status == 422
    error = await error_of(response)
    assert error["code"] == "no-feasible-offer" and error["details"]["binding_constraint"] == constraint
    assert error["message"].startswith(f"{constraint}:") and says in error["message"]
    status = await (await env.client.get(error["details"]["status_url"], headers=bearer(ADMIN))).json()
    assert status["state"] == "failed" and status["decision"]["binding_constraint"] == constraint
    assert env.state.audit_log[-1].outcome == "refused" and env.state.audit_log[-1].tenant_id == tenant
    assert env.compute.standin.engine.allocate_calls == 0


async def test_malformed_requests_and_unknown_tenants_and_ids(env: Env) -> None:
    bad = await env.post({"tenant_id": "acme", "resources": {}, "duration_hours": 6})
    assert bad.status == 422 and (await error_of(bad))["code"] == "validation-error"
    ghost = await env.post(gpu_body("ghost"), auth=ADMIN)
    assert ghost.status == 404 and (await error_of(ghost))["code"] == "tenant-not-found"
    for path in ("/provision/acme.nothing", "/provision/no-dot", "/provision/ACME.x"):
        missing = await env.get(path, ADMIN)
        assert missing.status == 404 and (await error_of(missing))["code"] == "compute-request-not-found"
    deleted = await env.client.delete("/api/v1/compute/provision/acme.nothing", headers=bearer(ADMIN))
    assert deleted.status == 404


async def test_tenants_only_see_and_touch_their_own_requests(env: Env) -> None:
    body = await (await env.post(gpu_body())).json()
    assert (await env.get(f"/provision/{body['request_id']}", OTHER_ADMIN)).status == 403
    assert (await env.client.delete(body["status_url"], headers=bearer(OTHER_ADMIN))).status == 403
    assert (await env.client.delete(body["status_url"], headers=bearer(ACME_VIEWER))).status == 403
    assert (await env.post(gpu_body(), auth=ACME_VIEWER)).status == 403
    assert (await env.post(gpu_body("small"), auth=ACME_ADMIN)).status == 403
    assert (await env.client.get("/api/v1/compute/capacity?tenant_id=small", headers=bearer(ACME_ADMIN))).status == 403
    assert (await env.client.get(body["status_url"])).status == 401


async def test_capacity_reflects_allocations_and_releases(env: Env) -> None:
    async def capacity(auth: str = ACME_VIEWER, query: str = "") -> dict[str, Any]:
        response = await env.get(f"/capacity{query}", auth)
        assert response.status == 200
        view: dict[str, Any] = await response.json()
        return view

    before = await capacity()
    row = env.row(before, "lambda", "asia-northeast-1", "gpu:H100")
    assert row["allocated_instances"] == 0 and row["available_instances"] == row["capacity_instances"]
    assert before["tenant"]["tenant_id"] == "acme" and before["tenant"]["gpus_remaining"] == 4

    body = await (await env.post(gpu_body())).json()
    during = await capacity()
    held = env.row(during, "lambda", "asia-northeast-1", "gpu:H100")
    assert held["allocated_instances"] == 1 and held["available_instances"] == row["available_instances"] - 1
    assert held["available_gpus"] == row["available_gpus"] - 4
    assert (during["tenant"]["gpus_in_use"], during["tenant"]["gpus_remaining"]) == (4, 0)
    assert during["tenant"]["spent_usd"] == pytest.approx(body["price_per_hour"] * 6)

    await env.client.delete(body["status_url"], headers=bearer(ACME_ADMIN))
    after = await capacity()
    assert env.row(after, "lambda", "asia-northeast-1", "gpu:H100") == row
    assert after["tenant"]["gpus_remaining"] == 4
    overall = await capacity(ADMIN)
    assert overall["tenant"] is None and len(overall["rows"]) == len(after["rows"])
    assert (await capacity(ADMIN, "?tenant_id=thrifty"))["tenant"]["budget_usd"] == 50


async def test_the_openapi_document_describes_the_compute_routes_and_their_real_answers(env: Env) -> None:
    document = await (await env.client.get("/api/v1/openapi.json")).json()
    post = document["paths"]["/compute/provision"]["post"]
    assert {"201", "202", "422", "502"} <= set(post["responses"]) and post["x-audit-action"] == "compute-provision"
    [header] = [p for p in post["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and header["schema"]["maxLength"] == 128 and not header["required"]
    assert {"get", "post"} <= set(document["paths"]["/compute/provision"])
    assert document["paths"]["/compute/quote"]["post"]["responses"]["200"]
    status_op = document["paths"]["/compute/provision/{request_id}"]["get"]
    assert {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}} in \
        status_op["parameters"]
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)

    def check(path: str, method: str, status: int, body: Any) -> None:
        media = "application/problem+json" if status >= 400 else "application/json"  # errors are RFC 9457
        schema = document["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]
        resolver = {"$defs": document["components"]["schemas"], **schema}
        text = json.dumps(resolver).replace("#/components/schemas/", "#/$defs/")
        jsonschema.Draft202012Validator(json.loads(text)).validate(body)

    example = post["requestBody"]["content"]["application/json"]["example"]
    created = await env.post(example, auth=ADMIN)
    assert created.status == 201
    body = await created.json()
    check("/compute/provision", "post", 201, body)
    request_path = f"/provision/{body['request_id']}"
    check("/compute/provision/{request_id}", "get", 200, await (await env.get(request_path, ADMIN)).json())
    check("/compute/capacity", "get", 200, await (await env.get("/capacity", ACME_ADMIN)).json())
    gone = await env.client.post(f"/api/v1/compute{request_path}/access", headers=bearer(ADMIN))
    check("/compute/provision/{request_id}/access", "post", 410, await gone.json())
    deleted = await env.client.delete(f"/api/v1/compute{request_path}", headers=bearer(ADMIN))
    check("/compute/provision/{request_id}", "delete", 200, await deleted.json())
    accepted = await env.post(example, auth=ADMIN, query="?wait_seconds=0")
    check("/compute/provision", "post", 202, await accepted.json())
    await asyncio.gather(*env.compute.runtime._tasks.values())
    claim = await env.client.post((await accepted.json())["access_url"], headers=bearer(ADMIN))
    check("/compute/provision/{request_id}/access", "post", 200, await claim.json())
    refused = await env.post(gpu_body(count=16), auth=ADMIN)
    check("/compute/provision", "post", 422, await refused.json())
    quote = await env.client.post("/api/v1/compute/quote", json=example, headers=bearer(ADMIN))
    check("/compute/quote", "post", 200, await quote.json())
    check("/compute/provision", "get", 200, await (await env.get("/provision?tenant_id=acme", ADMIN)).json())


# -- quota admission (issue #12, defect 5) ------------------------------------------------------------------


def cpu_body(tenant: str, vcpus: float, memory_gib: float = 0, **kw: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "resources": {"vcpus": vcpus, "memory_gib": memory_gib}, "duration_hours": 2, **kw}


async def refusal_of(response: Any) -> dict[str, Any]:
    assert response.status == 422, await response.text()
    error: dict[str, Any] = await error_of(response)
    assert error["code"] == "quota-exceeded", error
    return error


async def test_a_free_tenant_asking_for_64_vcpus_and_256_gib_is_refused_naming_the_resource(env: Env) -> None:
    # Before the fix: 201 running (only GPUs and the budget were checked).
    error = await refusal_of(await env.post(cpu_body("tiny", 64, 256), auth=ADMIN))
    details = error["details"]
    assert (details["resource"], details["requested"], details["in_use"], details["limit"]) == ("cpu_cores", 64, 0, 1)
    assert [e["resource"] for e in details["exceeded"]] == ["cpu_cores", "memory_gib"]
    assert details["exceeded"][1] == {"resource": "memory_gib", "requested": 256, "in_use": 0, "limit": 2}
    assert "cpu_cores: requested 64 vCPU(s), 0 in use of a quota of 1" in error["message"]
    assert env.compute.standin.engine.allocate_calls == 0 and env.compute.written == []  # nothing stored
    assert env.state.audit_log[-1].outcome == "refused" and env.state.audit_log[-1].tenant_id == "tiny"


async def test_gpu_requests_beyond_the_gpu_quota_are_refused_before_any_decision(env: Env) -> None:
    small = (await refusal_of(await env.post(gpu_body("small", count=1), auth=ADMIN)))["details"]
    assert (small["resource"], small["requested"], small["limit"]) == ("gpus", 1, 0)
    acme = (await refusal_of(await env.post(gpu_body("acme", count=8), auth=ADMIN)))["details"]
    assert (acme["resource"], acme["requested"], acme["in_use"], acme["limit"]) == ("gpus", 8, 0, 4)


async def test_live_requests_and_future_reservations_count_against_every_resource(env: Env) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    reserved = await env.post(gpu_body(count=4, start_at=tomorrow))
    answer = await reserved.json()
    assert reserved.status == 202 and answer["state"] == "requested"
    terms = answer["reservation"]  # the POST answer says what is held until the start, and what is not
    assert terms["quota_held"] is True and terms["capacity_held"] is False
    # The reservation holds the tenant's 4 GPUs: before the fix a requested record held none, so this ran.
    error = await refusal_of(await env.post(gpu_body(count=1)))
    assert (error["details"]["in_use"], error["details"]["limit"]) == (4, 4)

    running = await env.post(cpu_body("acme", 20, 64))
    assert running.status == 201, await running.text()
    error = await refusal_of(await env.post(cpu_body("acme", 16, 8)))
    details = error["details"]
    assert (details["resource"], details["in_use"], details["limit"]) == ("cpu_cores", 20, 32)
    assert (await env.post(cpu_body("acme", 12, 64))).status == 201  # exactly up to the quota

    deleted = await env.client.delete((await running.json())["status_url"], headers=bearer(ACME_ADMIN))
    assert deleted.status == 200  # a finished request frees its share
    assert (await env.post(cpu_body("acme", 16, 8))).status == 201


async def test_a_tenant_marked_over_quota_gets_no_new_compute(env: Env) -> None:
    quota = env.state.stores.quotas.get("acme")
    assert quota is not None
    quota.over_quota[QuotaResource.MEMORY_GIB] = OverQuota(
        used=130, limit=128, since=datetime.now(UTC), event_id="evt-over")
    env.state.stores.quotas.put("acme", quota)
    error = await refusal_of(await env.post(cpu_body("acme", 1)))
    assert error["details"]["reason"] == "over-quota" and error["details"]["over_quota"] == ["memory_gib"]
    assert "over its memory_gib quota" in error["message"]


async def test_a_compute_request_event_beyond_the_quota_is_refused_for_the_dead_letter(env: Env) -> None:
    event = ComputeRequested(
        event_id="evt-big", tenant_id="tiny", occurred_at=datetime.now(UTC), request_name="big",
        resources={"vcpus": 64, "memory_gib": 256}, duration_hours=1,
    )
    with pytest.raises(ComputeQuotaRefused) as refused:
        await env.compute.runtime.submit_event(event)
    assert refused.value.refusal.code == "quota-exceeded" and refused.value.refusal.resource is QuotaResource.CPU_CORES
    assert env.compute.runtime.store.get("tiny.big") is None and env.compute.standin.engine.allocate_calls == 0


async def test_a_termination_still_releasing_answers_202_with_the_requests_location(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await env.post(gpu_body())
    assert created.status == 201
    status_url = (await created.json())["status_url"]
    release = env.compute.runtime.terminate

    async def release_pending(request_id: str) -> ComputeRecord:
        # what a failed release leaves: the record stays terminating and the sweep retries the release
        record = await release(request_id)
        return record.model_copy(update={"state": ComputeState.TERMINATING})

    monkeypatch.setattr(env.compute.runtime, "terminate", release_pending)
    response = await env.client.delete(status_url, headers=bearer(ACME_ADMIN))
    assert response.status == 202 and (await response.json())["state"] == "terminating"
    assert response.headers["Location"] == status_url


async def test_the_quota_view_and_the_dashboard_count_a_running_allocations_gpus(env: Env) -> None:
    """The dashboard showed "GPUs 0 / 4" for a tenant running a 4 x H100 allocation: usage came only from
    resource-metrics samples. Now the quota view (API and dashboard rows alike) counts the machines held."""
    env.state.compute_records = env.compute.runtime.holding
    env.compute.table.listeners.append(  # what the worker's state reader does with the compute-records table
        lambda _table, key, _record: env.state.publish(LiveUpdate("compute-records", key.split("/")[0], {})))

    async def quota_gpus() -> float:
        body = await (await env.client.get("/api/v1/tenants/acme/quota", headers=bearer(ACME_VIEWER))).json()
        return float(body["usage"]["gpus"])

    assert await quota_gpus() == 0
    stream = await env.client.get("/ui/events", headers=bearer(ADMIN))
    name, snapshot = await next_event(stream)
    assert name == "snapshot"
    row = next(t for t in snapshot["tenants"] if t["tenant_id"] == "acme")
    assert row["quota"]["usage"]["gpus"] == 0 and row["quota"]["limits"]["gpus"] == 4

    created = await env.post(gpu_body())
    assert created.status == 201
    assert await quota_gpus() == 4
    quota = await (await env.client.get("/api/v1/tenants/acme/quota", headers=bearer(ADMIN))).json()
    assert quota["compute_allocations"] == 1 and quota["compute"]["gpus"] == 4 and quota["compute"]["cpu_cores"] > 0

    async def row_gpus(wanted: float) -> dict[str, Any]:
        while True:  # the live stream sends the row again after each compute-record change
            name, data = await next_event(stream)
            if name == "tenant" and data["tenant_id"] == "acme" and data["quota"]["usage"]["gpus"] == wanted:
                return dict(data)

    live = await row_gpus(4)
    assert live["quota"]["compute_allocations"] == 1
    await env.client.delete((await created.json())["status_url"], headers=bearer(ACME_ADMIN))
    assert (await row_gpus(0))["quota"]["compute_allocations"] == 0
    assert await quota_gpus() == 0
    stream.close()


# -- retries, listing and quotes (issue #14) ----------------------------------------------------------------


KEY = "5f0c6f4e-8d1e-4c55-9a59-3d1b2f1f7a10"


async def post_keyed(env: Env, body: dict[str, Any], key: str | None = KEY, auth: str = ACME_ADMIN,
                     query: str = "") -> Any:
    headers = {**bearer(auth), **({"Idempotency-Key": key} if key is not None else {})}
    return await env.client.post(f"/api/v1/compute/provision{query}", json=body, headers=headers)


async def test_a_retry_with_the_same_idempotency_key_gets_the_same_request_and_allocates_once(env: Env) -> None:
    first = await post_keyed(env, gpu_body())
    assert first.status == 201, await first.text()
    body = await first.json()
    assert body["access"]["ssh_private_key"] and "Idempotent-Replayed" not in first.headers
    # the same request spelled differently (float duration, explicit defaults) is the same request
    retried = await post_keyed(env, {**gpu_body(), "duration_hours": 6.0, "spot_allowed": False})
    assert retried.status == 201 and retried.headers["Idempotent-Replayed"] == "true"
    again = await retried.json()
    assert again["request_id"] == body["request_id"] and again["offer_id"] == body["offer_id"]
    assert again["access"] is None and "already claimed" in again["message"]  # the secrets exist once
    assert retried.headers["Location"] == body["status_url"]
    assert env.compute.standin.engine.allocate_calls == 1 and len(env.compute.standin.engine.active_allocations()) == 1
    assert len(env.compute.runtime.tenant_records("acme")) == 1
    audit = env.state.audit_log[-1]
    assert audit.detail["idempotency_key"] == KEY and audit.detail["replayed"] is True

    reused = await post_keyed(env, gpu_body(count=2))
    assert reused.status == 422
    error = await error_of(reused)
    assert error["code"] == "idempotency-key-reused" and error["details"]["request_id"] == body["request_id"]
    assert env.compute.standin.engine.allocate_calls == 1

    other_tenant = await post_keyed(env, cpu_body("small", 1), auth=ADMIN)  # keys are scoped per tenant
    assert other_tenant.status == 201, await other_tenant.text()
    assert (await other_tenant.json())["request_id"].startswith("small.")

    await env.client.delete(body["status_url"], headers=bearer(ACME_ADMIN))
    after = await post_keyed(env, gpu_body())
    assert after.status == 409 and (await error_of(after))["code"] == "compute-request-terminated"
    assert after.headers["Idempotent-Replayed"] == "true"


async def test_a_retry_while_the_allocation_is_still_running_waits_for_it_and_hands_out_access_once(
    env: Env,
) -> None:
    env.compute.standin.engine.provisioning_s = 30.0
    first = await post_keyed(env, gpu_body(), query="?wait_seconds=0")
    assert first.status == 202
    request_id = (await first.json())["request_id"]
    retried = await post_keyed(env, gpu_body(), query="?wait_seconds=0")
    assert retried.status == 202 and (await retried.json())["request_id"] == request_id
    assert retried.headers["Location"] == f"/api/v1/compute/provision/{request_id}"
    env.compute.standin.engine.provisioning_s = 0.0
    running = await post_keyed(env, gpu_body(), query="?wait_seconds=60")  # waits for the same allocation
    assert running.status == 201, await running.text()
    body = await running.json()
    assert body["request_id"] == request_id and "PRIVATE KEY" in body["access"]["ssh_private_key"]
    claim = await env.client.post(body["access_url"], headers=bearer(ACME_ADMIN))
    assert claim.status == 410  # handed out by the retry's answer, once
    assert env.compute.standin.engine.allocate_calls == 1


async def test_a_request_name_is_the_request_id_and_makes_the_post_retryable(env: Env) -> None:
    named = gpu_body(request_name="nightly-42")
    first = await env.post(named)
    assert first.status == 201
    assert (await first.json())["request_id"] == "acme.nightly-42"
    second = await env.post(named)
    assert second.status == 201 and (await second.json())["request_id"] == "acme.nightly-42"
    assert env.compute.standin.engine.allocate_calls == 1
    reused = await env.post(gpu_body(count=1, request_name="nightly-42"))
    assert reused.status == 422 and (await error_of(reused))["code"] == "idempotency-key-reused"


@pytest.mark.parametrize("key", ["", " ", "a b", "ключ", "a/b", "-leading", "x" * 129, "a;b"])
async def test_malformed_idempotency_keys_are_refused_before_anything_happens(env: Env, key: str) -> None:
    response = await post_keyed(env, gpu_body(), key=key)
    assert response.status == 400
    assert (await error_of(response))["code"] == "invalid-idempotency-key"
    assert env.compute.written == [] and env.compute.standin.engine.allocate_calls == 0


async def test_an_idempotency_key_given_twice_is_refused(env: Env) -> None:
    headers = [("Authorization", f"Bearer {ACME_ADMIN}"), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    response = await env.client.post("/api/v1/compute/provision", json=gpu_body(), headers=headers)
    assert response.status == 400 and (await error_of(response))["code"] == "invalid-idempotency-key"


@pytest.mark.parametrize("name", ["UPPER", "-x", "x-", "a.b", "x" * 49])
async def test_malformed_request_names_are_validation_errors(env: Env, name: str) -> None:
    response = await env.post(gpu_body(request_name=name))
    assert response.status == 422 and (await error_of(response))["code"] == "validation-error"


async def test_the_listing_pages_a_tenants_requests_newest_first(env: Env) -> None:
    ids = []
    for hours in (1, 2, 3):
        response = await env.post(cpu_body("acme", 2, duration_hours=hours))
        assert response.status == 201, await response.text()
        ids.append((await response.json())["request_id"])
    assert (await env.post(cpu_body("thrifty", 1), auth=ADMIN)).status == 201  # another tenant's
    newest_first = [r.request_id for r in sorted(env.compute.runtime.tenant_records("acme"),
                                                 key=lambda r: (r.created_at, r.request_id), reverse=True)]
    assert sorted(newest_first) == sorted(ids)

    page = await env.get("/provision?limit=2", ACME_VIEWER)  # the token's tenant by default
    assert page.status == 200
    first = await page.json()
    assert [item["request_id"] for item in first["items"]] == newest_first[:2] and first["next_cursor"]
    assert first["items"][0]["status_url"] == f"/api/v1/compute/provision/{newest_first[0]}"
    rest = await (await env.get(f"/provision?tenant_id=acme&limit=2&cursor={first['next_cursor']}")).json()
    assert [item["request_id"] for item in rest["items"]] == newest_first[2:] and rest["next_cursor"] is None
    everything = await (await env.get("/provision?tenant_id=acme&limit=200", ADMIN)).json()
    assert [item["request_id"] for item in everything["items"]] == newest_first
    assert {item["state"] for item in everything["items"]} == {"running"}

    await env.client.delete(f"/api/v1/compute/provision/{ids[0]}", headers=bearer(ACME_ADMIN))
    terminated = await (await env.get("/provision?state=terminated")).json()
    assert [item["request_id"] for item in terminated["items"]] == [ids[0]]

    assert (await env.get("/provision?tenant_id=thrifty", ACME_ADMIN)).status == 403  # another tenant's
    for query, code in (("limit=0", "invalid-query"), ("limit=201", "invalid-query"), ("limit=x", "invalid-query"),
                        ("cursor=bm90LWEtY3Vyc29y", "invalid-cursor"), ("cursor=%25%25", "invalid-query"),
                        ("limit=1&limit=2", "invalid-query"), ("page=2", "invalid-query"),
                        ("state=sleeping", "invalid-query")):
        response = await env.get(f"/provision?{query}")
        assert response.status == 400, query
        assert (await error_of(response))["code"] == code
    no_tenant = await env.get("/provision", ADMIN)
    assert no_tenant.status == 400 and (await error_of(no_tenant))["code"] == "tenant-required"
    unknown = await env.get("/provision?tenant_id=nobody", ADMIN)
    assert unknown.status == 404 and (await error_of(unknown))["code"] == "tenant-not-found"


async def test_a_quote_ranks_the_offers_and_explains_the_exclusions_without_allocating(env: Env) -> None:
    response = await env.client.post("/api/v1/compute/quote?limit=5", json=gpu_body(request_name="ignored"),
                                     headers=bearer(ACME_VIEWER))  # a dry run: reading is enough
    assert response.status == 200, await response.text()
    quote = await response.json()
    assert quote["feasible"] is True and quote["would_provision"] is True and quote["quota_refusal"] is None
    offers = quote["offers"]
    assert len(offers) == 5 <= quote["feasible_count"] and offers[0]["offer_id"] == CHEAPEST_4X_H100
    assert [o["rank"] for o in offers] == list(range(5))
    assert [o["total_cost"] for o in offers] == sorted(o["total_cost"] for o in offers)
    for offer in offers:
        assert offer["gpu_name"].casefold() == "h100" and offer["gpu_count"] >= 4
        assert offer["spot"] is False and offer["total_cost"] == pytest.approx(offer["price_per_hour"] * 6)
    excluded = {group["reason"]: group for group in quote["excluded"]}
    assert excluded["gpu_type"]["count"] > len(excluded["gpu_type"]["offer_ids"]) > 0
    assert sum(g["count"] for g in quote["excluded"]) + quote["feasible_count"] == quote["offers_considered"]
    # nothing stored, allocated or announced; the quote is what provision then chooses
    assert env.compute.written == [] and env.compute.events == [] and env.compute.standin.engine.allocate_calls == 0
    spot = await (await env.client.post("/api/v1/compute/quote?limit=50", json=gpu_body(count=1, spot_allowed=True),
                                        headers=bearer(ACME_ADMIN))).json()
    assert any(o["spot"] and o["capacity_class"] == "spot" for o in spot["offers"])
    created = await (await env.post(gpu_body())).json()
    assert created["offer_id"] == offers[0]["offer_id"] and created["price_per_hour"] == offers[0]["price_per_hour"]
    busy = await (await env.client.post("/api/v1/compute/quote", json=gpu_body(count=1),
                                        headers=bearer(ACME_ADMIN))).json()
    assert busy["binding_constraint"] == "quota" and busy["would_provision"] is False  # its 4 GPUs are in use


async def test_with_quote_on_request_the_quote_route_asks_the_engine_first(offers: list[Offer]) -> None:
    async with make_env(offers, TestServer, compute_quote_on_request=True) as fresh:
        fresh.compute.standin.engine.exhaust("lambda")  # after the runtime's last full quote
        one = gpu_body(count=1)  # 1x H100 exists at nebius and verda too
        response = await fresh.client.post("/api/v1/compute/quote", json=one, headers=bearer(ACME_ADMIN))
        assert response.status == 200, await response.text()
        quote = await response.json()
        excluded = {group["reason"]: group for group in quote["excluded"]}
        assert excluded["capacity"]["count"] > 0 and quote["offers"][0]["provider"] != "lambda"
        created = await (await fresh.post(one)).json()
        assert created["state"] == "running" and created["attempts"] == 1  # no attempt on the exhausted provider
        assert created["offer_id"] == quote["offers"][0]["offer_id"]


async def test_a_quote_says_why_nothing_would_be_provisioned(env: Env) -> None:
    nothing = await (await env.client.post("/api/v1/compute/quote", json=gpu_body(providers=["nowhere"]),
                                           headers=bearer(ACME_ADMIN))).json()
    assert nothing["feasible"] is False and nothing["would_provision"] is False and nothing["offers"] == []
    assert nothing["binding_constraint"] == "provider" and nothing["message"]
    over = await (await env.client.post("/api/v1/compute/quote", json=cpu_body("tiny", 64, 256),
                                        headers=bearer(ADMIN))).json()
    assert over["feasible"] is True and over["would_provision"] is False
    assert over["quota_refusal"]["reason"] and over["quota_refusal"]["details"]["resource"] == "cpu_cores"
    for body, status, code in ((gpu_body(duration_hours=-1), 422, "validation-error"),
                               (gpu_body("nobody"), 404, "tenant-not-found")):
        response = await env.client.post("/api/v1/compute/quote", json=body, headers=bearer(ADMIN))
        assert response.status == status and (await error_of(response))["code"] == code
    other = await env.client.post("/api/v1/compute/quote", json=gpu_body("thrifty"), headers=bearer(ACME_ADMIN))
    assert other.status == 403
    assert env.compute.written == [] and env.compute.standin.engine.allocate_calls == 0


async def test_access_details_a_timed_out_client_never_got_wait_for_its_retry(offers: list[Offer]) -> None:
    async with make_env(offers, WorkerLikeServer) as env:
        await access_kept_for_the_retry(env)


async def access_kept_for_the_retry(env: Env) -> None:
    env.compute.standin.engine.provisioning_s = 1.0
    with pytest.raises(TimeoutError):  # the client gives up while the server still waits for the allocation
        await env.client.post("/api/v1/compute/provision?wait_seconds=60", json=gpu_body(),
                              headers={**bearer(ACME_ADMIN), "Idempotency-Key": KEY},
                              timeout=aiohttp.ClientTimeout(total=0.2))
    request_id = idempotent_request_id("acme", KEY)
    vault = env.compute.runtime.vault
    for _ in range(600):  # the handler notices the closed connection once the allocation runs (~1 s)
        if vault.holds(request_id):
            break
        await asyncio.sleep(0.05)
    assert vault.holds(request_id)
    retried = await post_keyed(env, gpu_body())
    assert retried.status == 201 and retried.headers["Idempotent-Replayed"] == "true"
    body = await retried.json()
    assert body["request_id"] == request_id and "PRIVATE KEY" in body["access"]["ssh_private_key"]
    assert env.compute.standin.engine.allocate_calls == 1


async def test_a_tenant_with_a_quarantined_workload_gets_no_new_compute(env: Env) -> None:
    env.compute.runtime.service.quarantined = lambda tenant_id: ["api"] if tenant_id == "acme" else []
    refused = await env.post(gpu_body(count=1))
    error = await error_of(refused)
    assert refused.status == 409 and error["code"] == "tenant-quarantined", error
    assert "api" in error["message"] and error["details"]["reason"] == "quarantined"
    assert env.compute.runtime.service.store.values() == []  # nothing stored, nothing allocated
    assert (await env.post(gpu_body("thrifty", count=1), auth=ADMIN)).status in (201, 202)  # others are not held
    env.compute.runtime.service.quarantined = lambda tenant_id: []  # released: admitted again
    assert (await env.post(gpu_body(count=1))).status in (201, 202)
