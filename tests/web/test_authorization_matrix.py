"""Who may call what: every route of the worker's web server x every kind of caller, with the expected
answer. The routes are enumerated from the application itself, and a route without a row in ``MATRIX`` fails
the test, so a new route cannot be added without deciding who may call it.

Expected classes: ``ok`` (the caller is let through: 2xx, or a 4xx about the request itself - 404, 409,
422 - but never 401/403 and never 5xx), ``401`` (no acceptable token), ``403`` (authenticated, not allowed).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipeline.compute.catalog import Offer, load_catalogs
from pipeline.compute.factory import catalog_paths
from pipeline.config import Settings
from pipeline.events.models import Tier
from tests.pipeline.compute.support import runtime_env
from tests.web.conftest import (
    ADMIN,
    PEER_SECRET,
    SECRET,
    FakeReadiness,
    check_problem,
    fixed_quota,
    tenant_event,
    token,
)
from tests.web.memory_state import MemoryState
from tests.web.test_scaling_api import TT, make_engine
from web import faust_state
from web.auth import Authenticator
from web.compute import ComputeApi, LocalCompute
from web.compute import internal_routes as compute_internal_routes
from web.compute import operations as compute_operations
from web.peers import PEER_HEADER, peer_middleware
from web.scaling import EngineBackend
from web.scaling import scaling_operations as scaling_operations_of
from web.server import build_root_app

# -- callers ---------------------------------------------------------------------------------------------


def _alg_none() -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": "mallory", "tenant_id": None, "roles": ["platform-admin"], "exp": 4102444800}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


CALLERS: dict[str, dict[str, str]] = {
    "no-token": {},
    "expired": {"Authorization": "Bearer " + token(("platform-admin",), None, ttl=timedelta(hours=-1))},
    "wrong-signature": {"Authorization": "Bearer " + token(("platform-admin",), None,
                                                           secret="not-the-secret-0123456789abcdef-xyz")},
    "alg-none": {"Authorization": "Bearer " + _alg_none()},
    "viewer": {"Authorization": "Bearer " + token(("tenant-viewer",), "acme", sub="acme-viewer")},
    "other-tenant-admin": {"Authorization": "Bearer " + token(("tenant-admin",), "globex", sub="globex-admin")},
    "tenant-admin": {"Authorization": "Bearer " + token(("tenant-admin",), "acme", sub="acme-admin")},
    "platform-admin": {"Authorization": "Bearer " + ADMIN},
    "wrong-peer-credential": {PEER_HEADER: "guessed-" + "0" * 40, "X-Internal-Token": "0" * 64},
    "peer": {PEER_HEADER: PEER_SECRET},
}
UNAUTHENTICATED = ("no-token", "expired", "wrong-signature", "alg-none")
NOT_A_USER = ("wrong-peer-credential", "peer")  # no bearer token: a user route answers 401


def public() -> dict[str, str]:
    return dict.fromkeys(CALLERS, "ok")


def tenant_route(allowed: tuple[str, ...]) -> dict[str, str]:
    """A route about tenant acme: 401 without a valid token, ok for ``allowed``, 403 for the other users."""
    expected = {caller: "401" for caller in (*UNAUTHENTICATED, *NOT_A_USER)}
    for caller in ("viewer", "other-tenant-admin", "tenant-admin", "platform-admin"):
        expected[caller] = "ok" if caller in allowed else "403"
    return expected


def listing() -> dict[str, str]:
    """A route without a tenant in it: every user is let through, and sees only its own tenant."""
    return tenant_route(("viewer", "other-tenant-admin", "tenant-admin", "platform-admin"))


READ = tenant_route(("viewer", "tenant-admin", "platform-admin"))
WRITE = tenant_route(("tenant-admin", "platform-admin"))
PLATFORM = tenant_route(("platform-admin",))
INTERNAL = {**dict.fromkeys(CALLERS, "403"), "peer": "ok"}

REQUEST = "acme.r0000000000000000000000000000000"
COMPUTE_BODY = {"tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": 1}}, "duration_hours": 1,
                "purpose": "training"}

#: (method, route pattern) -> (path to call, JSON body or None, expected class per caller)
MATRIX: dict[tuple[str, str], tuple[str, Any, dict[str, str]]] = {
    ("GET", "/health"): ("/health", None, public()),
    ("GET", "/ready"): ("/ready", None, public()),
    ("GET", "/metrics"): ("/metrics", None, public()),
    ("GET", "/ui"): ("/ui", None, public()),
    ("GET", "/ui/"): ("/ui/", None, public()),
    ("GET", "/ui/app.js"): ("/ui/app.js", None, public()),
    ("GET", "/ui/app.css"): ("/ui/app.css", None, public()),
    ("GET", "/ui/charts.js"): ("/ui/charts.js", None, public()),
    ("GET", "/ui/ui.js"): ("/ui/ui.js", None, public()),
    ("GET", "/ui/uplot.js"): ("/ui/uplot.js", None, public()),
    ("GET", "/ui/uplot.css"): ("/ui/uplot.css", None, public()),
    ("GET", "/ui/events"): ("/ui/events", None, listing()),
    ("GET", "/api/v1/openapi.json"): ("/api/v1/openapi.json", None, public()),
    # the interactive API page renders the public OpenAPI document; its "Try it out" calls need a token
    ("GET", "/api/v1/docs"): ("/api/v1/docs", None, public()),
    ("GET", "/api/v1/docs/api-docs.js"): ("/api/v1/docs/api-docs.js", None, public()),
    ("GET", "/api/v1/docs/swagger-ui-bundle.js"): ("/api/v1/docs/swagger-ui-bundle.js", None, public()),
    ("GET", "/api/v1/docs/swagger-ui.css"): ("/api/v1/docs/swagger-ui.css", None, public()),
    ("POST", "/api/v1/provision"): ("/api/v1/provision", {"tenant_id": "acme", "name": "Acme"}, WRITE),
    ("GET", "/api/v1/tenants"): ("/api/v1/tenants", None, listing()),
    ("GET", "/api/v1/tenants/{tenant_id}"): ("/api/v1/tenants/acme", None, READ),
    ("DELETE", "/api/v1/tenants/{tenant_id}"): ("/api/v1/tenants/acme", None, WRITE),
    ("GET", "/api/v1/tenants/{tenant_id}/provisioning-status"): (
        "/api/v1/tenants/acme/provisioning-status", None, READ),
    ("GET", "/api/v1/tenants/{tenant_id}/quota"): ("/api/v1/tenants/acme/quota", None, READ),
    ("GET", "/api/v1/tenants/{tenant_id}/users"): ("/api/v1/tenants/acme/users?limit=10", None, READ),
    ("GET", "/api/v1/tenants/{tenant_id}/utilization"): ("/api/v1/tenants/acme/utilization", None, READ),
    ("GET", "/api/v1/tenants/{tenant_id}/costs"): ("/api/v1/tenants/acme/costs", None, READ),
    ("PUT", "/api/v1/tenants/{tenant_id}/quota"): (
        "/api/v1/tenants/acme/quota", {"cpu_cores": 8, "memory_gib": 32, "gpus": 1, "storage_gib": 200}, PLATFORM),
    ("DELETE", "/api/v1/tenants/{tenant_id}/quota/over-quota/{resource}"): (
        "/api/v1/tenants/acme/quota/over-quota/cpu_cores", None, PLATFORM),
    ("DELETE", "/api/v1/tenants/{tenant_id}/quarantine/{resource_id}"): (
        "/api/v1/tenants/acme/quarantine/api", None, PLATFORM),
    ("POST", "/api/v1/compute/provision"): ("/api/v1/compute/provision?wait_seconds=0", COMPUTE_BODY, WRITE),
    ("GET", "/api/v1/compute/provision"): ("/api/v1/compute/provision?tenant_id=acme&limit=5", None, READ),
    ("POST", "/api/v1/compute/quote"): ("/api/v1/compute/quote", COMPUTE_BODY, READ),
    ("GET", "/api/v1/compute/provision/{request_id}"): (f"/api/v1/compute/provision/{REQUEST}", None, READ),
    ("DELETE", "/api/v1/compute/provision/{request_id}"): (f"/api/v1/compute/provision/{REQUEST}", None, WRITE),
    ("POST", "/api/v1/compute/provision/{request_id}/access"): (
        f"/api/v1/compute/provision/{REQUEST}/access", None, WRITE),
    ("GET", "/api/v1/compute/capacity"): ("/api/v1/compute/capacity?tenant_id=acme", None, READ),
    ("GET", "/api/v1/scaling/policies"): ("/api/v1/scaling/policies?tenant_id=acme", None, READ),
    ("POST", "/api/v1/scaling/policies"): ("/api/v1/scaling/policies", TT, WRITE),
    ("GET", "/api/v1/scaling/policies/{policy_id}"): ("/api/v1/scaling/policies/cpu?tenant_id=acme", None, READ),
    ("PUT", "/api/v1/scaling/policies/{policy_id}"): ("/api/v1/scaling/policies/cpu", TT, WRITE),
    ("DELETE", "/api/v1/scaling/policies/{policy_id}"): (
        "/api/v1/scaling/policies/cpu?tenant_id=acme", None, WRITE),
    ("GET", "/api/v1/scaling/decisions"): ("/api/v1/scaling/decisions?tenant_id=acme", None, READ),
    ("GET", "/internal/v1/state/tenants"): ("/internal/v1/state/tenants", None, INTERNAL),
    ("GET", "/internal/v1/state/{table}/{key}"): ("/internal/v1/state/tenants/acme", None, INTERNAL),
    ("POST", "/internal/v1/compute/provision"): (
        "/internal/v1/compute/provision", {"request_id": REQUEST, "request": COMPUTE_BODY, "wait_seconds": 0},
        INTERNAL),
    ("POST", "/internal/v1/compute/quote"): ("/internal/v1/compute/quote", {"request": COMPUTE_BODY}, INTERNAL),
    ("GET", "/internal/v1/compute/requests"): ("/internal/v1/compute/requests?tenant_id=acme", None, INTERNAL),
    ("GET", "/internal/v1/compute/requests/{request_id}"): (f"/internal/v1/compute/requests/{REQUEST}", None,
                                                           INTERNAL),
    ("DELETE", "/internal/v1/compute/requests/{request_id}"): (f"/internal/v1/compute/requests/{REQUEST}", None,
                                                              INTERNAL),
    ("POST", "/internal/v1/compute/requests/{request_id}/access"): (
        f"/internal/v1/compute/requests/{REQUEST}/access", None, INTERNAL),
    ("GET", "/internal/v1/compute/capacity"): ("/internal/v1/compute/capacity?tenant_id=acme", None, INTERNAL),
    ("GET", "/internal/v1/compute/holding"): ("/internal/v1/compute/holding", None, INTERNAL),
}


# -- the worker's application, in process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def offers() -> list[Offer]:
    return load_catalogs(catalog_paths(Settings(compute_catalog_dir=None)))


async def worker_app(offers: list[Offer], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[web.Application]:
    """Everything ``web.server.mount`` puts on a worker: the API with compute and scaling, the dashboard, the
    internal endpoints and the peer middleware, over in-memory state."""
    state = MemoryState(quota_for_tier=fixed_quota)
    for tenant_id in ("acme", "globex"):
        await state.submit_tenant(tenant_event(tenant_id, Tier.ENTERPRISE))

    def quota_gpus(tenant_id: str) -> int | None:
        quota = state.stores.quotas.get(tenant_id)
        return quota.limits.gpus if quota is not None else None

    async with runtime_env(offers, quota_gpus=quota_gpus) as compute:
        local = LocalCompute(compute.runtime, state.stores.tenants.get)
        extra = [*compute_operations(ComputeApi(local, None, provision_wait_s=0)),
                 *scaling_operations_of(EngineBackend(make_engine(state)), state)]
        app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None,
                             extra_operations=extra)
        settings = Settings(peer_secret=PEER_SECRET)  # type: ignore[arg-type]
        readable = {"tenants": state.stores.tenants}
        app.router.add_routes(faust_state.internal_routes(settings, readable, state.stores.tenants))
        app.router.add_routes(compute_internal_routes(local, PEER_SECRET))
        app.middlewares.append(peer_middleware(PEER_SECRET, state.audit))
        yield app


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path pattern) the application serves, sub-applications included."""
    found: set[tuple[str, str]] = set()

    def walk(application: web.Application) -> None:
        for resource in application.router.resources():
            sub = getattr(resource, "_app", None)
            if isinstance(sub, web.Application):
                walk(sub)  # a mounted sub-application's resources carry its prefix already
                continue
            for route in resource:
                if route.method != "HEAD":
                    found.add((route.method, resource.canonical))

    walk(app)
    return found


def status_class(status: int) -> str:
    if status in (401, 403):
        return str(status)
    return "ok" if status < 500 else f"server-error {status}"


async def test_every_route_has_a_row(offers: list[Offer], monkeypatch: pytest.MonkeyPatch) -> None:
    async for app in worker_app(offers, monkeypatch):
        served = routes_of(app)
    missing = sorted(served - MATRIX.keys())
    assert not missing, f"routes without a row in the authorization matrix: {missing}"
    assert not sorted(MATRIX.keys() - served), "rows for routes that no longer exist"


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_the_authorization_matrix(caller: str, offers: list[Offer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each caller against a fresh worker, every route in turn (a route's effect may show in a later one:
    both are still checked only for who was let through)."""
    headers = CALLERS[caller]
    observed: dict[tuple[str, str], str] = {}
    expected: dict[tuple[str, str], str] = {}
    not_problems: dict[tuple[str, str], str] = {}
    async for app in worker_app(offers, monkeypatch):
        async with TestClient(TestServer(app)) as client:
            for (method, pattern), (path, body, by_caller) in MATRIX.items():
                call_headers = dict(headers)
                if pattern == "/ui/events" and "Authorization" in call_headers:
                    # the event stream takes its token in the query (EventSource cannot send headers)
                    path = f"{path}?access_token={call_headers.pop('Authorization').removeprefix('Bearer ')}"
                async with client.request(method, path, json=body, headers=call_headers) as response:
                    observed[(method, pattern)] = status_class(response.status)
                    if response.status >= 400:  # every refusal, internal routes' too, is a problem document
                        try:
                            check_problem(response.status, response.content_type,
                                          await response.json(content_type=None))
                        except (AssertionError, ValueError) as exc:
                            not_problems[(method, pattern)] = repr(exc)[:300]
                expected[(method, pattern)] = by_caller[caller]
    wrong = {route: f"expected {expected[route]}, got {observed[route]}" for route in expected
             if observed[route] != expected[route]}
    assert not wrong, wrong
    assert not not_problems, not_problems
