from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pipeline.events.models import ResourceAnomaly, ScalingRequest, Severity
from pipeline.tenants.logic import TENANT_RESOURCES
from pipeline.tenants.models import AnomalyLog, AnomalyRecord, ResourceState
from tests.web.conftest import ADMIN, FakeReadiness, bearer, error_of, next_event, tenant_event, token
from tests.web.memory_state import MemoryState
from web.server import HUB_KEY
from web.state import LiveUpdate


async def test_health_is_200_while_the_process_lives(client: TestClient, readiness: FakeReadiness):
    readiness.ready = False
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_ready_is_503_with_the_reason_then_200(client: TestClient, readiness: FakeReadiness):
    readiness.ready, readiness.reason = False, "a rebalance is under way"
    response = await client.get("/ready")
    assert response.status == 503
    assert await response.json() == {"status": "not-ready", "reason": "a rebalance is under way"}
    readiness.ready, readiness.reason = True, "ready"
    response = await client.get("/ready")
    assert response.status == 200
    assert (await response.json())["status"] == "ready"


async def test_ready_is_503_when_the_check_itself_fails(client: TestClient, readiness: FakeReadiness):
    readiness.error = RuntimeError("no assignment yet")
    response = await client.get("/ready")
    assert response.status == 503
    assert "no assignment" not in await response.text()
    assert (await response.json())["reason"] == "the readiness check failed"


def latency_count(method: str, route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "provisioning_http_request_duration_seconds_count", {"method": method, "route": route, "status": status}
    )
    return value or 0.0


async def test_metrics_exposes_the_registry_with_latency_per_route_pattern(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    route = "/api/v1/tenants/{tenant_id}"
    before_ok, before_404 = latency_count("GET", route, "200"), latency_count("GET", route, "404")
    assert (await client.get("/api/v1/tenants/acme", headers=bearer(ADMIN))).status == 200
    assert (await client.get("/api/v1/tenants/ghost", headers=bearer(ADMIN))).status == 404
    assert (await client.get("/no/such/page/unmatched-xyzzy")).status == 404

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "version=" in response.headers["Content-Type"]
    text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "provisioning_http_request_duration_seconds" in families
    assert "provisioning_events_processed_total" in families or "provisioning_events_processed" in families
    assert latency_count("GET", route, "200") == before_ok + 1
    assert latency_count("GET", route, "404") == before_404 + 1
    assert "/api/v1/tenants/acme" not in text and "/api/v1/tenants/ghost" not in text  # patterns, not paths
    assert "xyzzy" not in text  # (a number like 12345 could appear in any metric value)
    assert latency_count("GET", "<unmatched>", "404") >= 1


async def test_metrics_speaks_openmetrics_when_asked(client: TestClient):
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")


async def test_ui_pages_are_served_with_a_strict_content_security_policy(client: TestClient):
    response = await client.get("/ui", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/ui/"
    index = await client.get("/ui/")
    assert index.status == 200 and index.content_type == "text/html"
    html = await index.text()
    assert 'src="app.js"' in html and 'href="app.css"' in html and "http" not in html.replace("http-equiv", "")
    assert "default-src 'self'" in index.headers["Content-Security-Policy"]
    for asset, content_type in (("app.js", "javascript"), ("app.css", "text/css")):
        response = await client.get(f"/ui/{asset}")
        assert response.status == 200 and content_type in response.content_type
        assert "//cdn" not in await response.text()


# -- the event stream ----------------------------------------------------------------------------------


async def test_the_stream_refuses_missing_and_bad_tokens(client: TestClient):
    response = await client.get("/ui/events")
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await error_of(response))["code"] == "unauthorized"
    bad = token(secret="not-the-secret-but-long-enough-0123456789")
    assert (await client.get("/ui/events", params={"access_token": bad})).status == 401
    assert (await client.get("/ui/events", params={"access_token": token(("nobody",), "acme")})).status == 403


async def test_the_stream_sends_a_snapshot_then_live_changes(client: TestClient, state: MemoryState):
    await state.submit_tenant(tenant_event("acme"))
    response = await client.get("/ui/events", params={"access_token": ADMIN})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    name, snapshot = await next_event(response)
    assert name == "snapshot"
    assert [v["tenant_id"] for v in snapshot["tenants"]] == ["acme"]
    assert snapshot["principal"]["roles"] == ["platform-admin"]
    assert set(snapshot["tenants"][0]["status"]["resources"]) == set(TENANT_RESOURCES)

    await state.submit_tenant(tenant_event("globex"))
    name, view = await next_event(response)
    assert name == "tenant" and view["tenant_id"] == "globex"
    assert view["tenant"]["name"] == "Globex Inc"
    assert view["quota"]["limits"]["cpu_cores"] == 4
    assert {r["status"] for r in view["status"]["resources"].values()} == {"pending"}

    state.set_resource_status("globex", "kubernetes", ResourceState.READY)
    name, view = await next_event(response)
    assert name == "tenant" and view["status"]["resources"]["kubernetes"]["status"] == "ready"

    now = datetime.now(UTC)
    state.record_anomaly(ResourceAnomaly(
        event_id="a1", tenant_id="globex", occurred_at=now, resource_type="pod", resource_id="api-0",
        anomaly_type="cpu-spike", severity=Severity.HIGH, value=0.97,
    ))
    seen = {}
    for _ in range(3):
        name, data = await next_event(response)
        seen[name] = data
    assert seen["anomaly"]["data"]["anomaly_type"] == "cpu-spike" and seen["anomaly"]["tenant_id"] == "globex"
    assert seen["scaling"]["data"]["workload"] == "api-0"  # a high anomaly scales
    response.close()


async def test_the_stream_only_shows_a_tenant_token_its_own_tenant(client: TestClient, state: MemoryState):
    for tenant_id in ("acme", "globex"):
        await state.submit_tenant(tenant_event(tenant_id))
    state.request_scaling(ScalingRequest(event_id="s0", tenant_id="acme", occurred_at=datetime.now(UTC),
                                         workload="web", delta=1))
    await asyncio.sleep(0)  # let the hub see it
    viewer = token(("tenant-viewer",), "globex", sub="gary")
    response = await client.get("/ui/events", params={"access_token": viewer})
    name, snapshot = await next_event(response)
    assert name == "snapshot" and [v["tenant_id"] for v in snapshot["tenants"]] == ["globex"]
    assert snapshot["scaling"] == []

    await state.delete_tenant("acme", purge=False, actor="root")
    state.request_scaling(ScalingRequest(event_id="s1", tenant_id="acme", occurred_at=datetime.now(UTC),
                                         workload="web", delta=1))
    state.set_resource_status("globex", "s3", ResourceState.FAILED, "bucket quota")
    name, view = await next_event(response)
    assert (name, view["tenant_id"]) == ("tenant", "globex")  # nothing of acme came before it
    assert view["status"]["resources"]["s3"]["last_error"] == "bucket quota"
    response.close()


async def test_the_stream_ends_when_the_token_expires(client: TestClient):
    short = token(ttl=timedelta(seconds=1))
    response = await client.get("/ui/events", params={"access_token": short})
    assert (await next_event(response))[0] == "snapshot"
    name, data = await next_event(response)
    assert name == "token-expired" and "expired" in data["message"]
    assert await response.content.read() == b""


async def test_a_client_that_falls_behind_gets_a_fresh_snapshot(client: TestClient, state: MemoryState):
    response = await client.get("/ui/events", params={"access_token": ADMIN})
    assert (await next_event(response))[0] == "snapshot"
    hub = client.server.app[HUB_KEY]
    [subscriber] = hub.subscribers
    subscriber.overflowed = True
    await state.submit_tenant(tenant_event("acme"))
    name, snapshot = await next_event(response)
    assert name == "snapshot" and [v["tenant_id"] for v in snapshot["tenants"]] == ["acme"]
    response.close()


async def test_the_bearer_header_works_for_the_stream_too(client: TestClient):
    response = await client.get("/ui/events", headers=bearer(ADMIN))
    assert (await next_event(response))[0] == "snapshot"
    response.close()


# -- mount() on the worker's aiohttp application ---------------------------------------------------------


async def test_mount_installs_everything_on_the_workers_application():
    from aiohttp import web as aioweb
    from aiohttp.test_utils import TestServer
    from pydantic import SecretStr

    from pipeline.config import Settings
    from tests.web.conftest import PEER_SECRET, SECRET, fixed_quota
    from web.faust_state import internal_routes
    from web.server import mount

    state = MemoryState(quota_for_tier=fixed_quota)
    settings = Settings(jwt_secret=SecretStr(SECRET), peer_secret=SecretStr(PEER_SECRET))
    readiness, web_app = FakeReadiness(), aioweb.Application()
    readiness.ready, readiness.reason = False, "waiting to join the consumer group"
    mount(web_app, settings, state, state, readiness, lambda: {}, lambda event: {"planned": event.tenant_id}, [],
          internal_routes(settings, {"tenants": state.stores.tenants}, state.stores.tenants))
    async with TestClient(TestServer(web_app)) as worker:
        response = await worker.get("/ready")
        assert response.status == 503 and (await response.json())["reason"].startswith("waiting to join")
        assert (await worker.get("/api/v1/tenants", headers=bearer(ADMIN))).status == 503
        readiness.ready, readiness.reason = True, "ready"
        assert (await worker.get("/ready")).status == 200
        assert (await worker.get("/health")).status == 200
        assert (await worker.get("/metrics")).status == 200
        assert (await worker.get("/ui/")).status == 200
        response = await worker.post(
            "/api/v1/provision?dry_run=true", json={"tenant_id": "acme", "name": "A", "tier": "free"},
            headers=bearer(ADMIN),
        )
        assert (await response.json())["plan"] == {"planned": "acme"}
        stream = await worker.get("/ui/events", params={"access_token": ADMIN})
        assert (await next_event(stream))[0] == "snapshot"
        stream.close()
        # the internal endpoints: guarded by PEER_SECRET on every route, and every call audited
        assert (await worker.get("/internal/v1/state/tenants")).status == 403
        guessed = {"X-Peer-Token": "x" * 40, "X-Internal-Token": "x" * 40}
        assert (await worker.get("/internal/v1/state/tenants", headers=guessed)).status == 403
        peer = {"X-Peer-Token": PEER_SECRET}
        assert (await worker.get("/internal/v1/state/tenants", headers=peer)).status == 200
        internal = [r for r in state.audit_log if r.action.startswith("internal")]
        assert [(r.outcome, r.actor.split(":")[0], r.detail["status"]) for r in internal] == [
            ("refused", "anonymous", 403), ("refused", "anonymous", 403), ("succeeded", "peer", 200),
        ]


async def test_the_stream_understands_table_named_updates(client: TestClient, state: MemoryState):
    """The worker's reader names updates after its tables (tenants, provisioning-status, anomalies...)."""
    await state.submit_tenant(tenant_event("acme"))
    response = await client.get("/ui/events", params={"access_token": ADMIN})
    assert (await next_event(response))[0] == "snapshot"
    state.set_resource_status("acme", "s3", ResourceState.READY)
    await next_event(response)  # the memory state's own "status" update
    status = await state.provisioning_status("acme")
    assert status is not None
    state.publish(LiveUpdate("provisioning-status", "acme", status.model_dump(mode="json")))
    name, view = await next_event(response)
    assert name == "tenant" and view["status"]["resources"]["s3"]["status"] == "ready"

    now = datetime.now(UTC)
    log = AnomalyLog(tenant_id="acme", recent=[AnomalyRecord(
        event_id="a9", resource_type="disk", resource_id="pv-1", anomaly_type="latency", severity="low",
        value=12.5, reaction="notify", occurred_at=now,
    )])
    state.publish(LiveUpdate("anomalies", "acme", AnomalyLog(tenant_id="acme").model_dump(mode="json")))
    state.publish(LiveUpdate("anomalies", "acme", log.model_dump(mode="json")))
    name, anomaly = await next_event(response)  # the empty log sent nothing
    assert name == "anomaly" and anomaly["data"]["event_id"] == "a9" and anomaly["tenant_id"] == "acme"
    response.close()
