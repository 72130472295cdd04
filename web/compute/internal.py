"""The owner's internal endpoints (``/internal/v1/compute/...``) that forwarding workers call."""

from __future__ import annotations

from aiohttp import web

from web.api import json_body, parse_model, parse_query
from web.compute.local import LocalCompute
from web.compute.models import INTERNAL_BASE, ForwardedProvision, ForwardedQuote, ListQuery
from web.errors import ApiError
from web.peers import require_peer


def internal_routes(local: LocalCompute, token: str) -> web.RouteTableDef:
    """What forwarding workers call on the owner (guarded by the peer credential, audited by the peer
    middleware of ``web/peers.py``)."""
    routes = web.RouteTableDef()

    def check(request: web.Request) -> None:
        require_peer(request, token)

    @routes.post(f"{INTERNAL_BASE}/provision", name="internal_compute_provision")
    async def provision(request: web.Request) -> web.Response:
        check(request)
        forwarded = parse_model(ForwardedProvision, await json_body(request))
        return (await local.provision(forwarded.request_id, forwarded.request, forwarded.wait_seconds)).response()

    @routes.post(f"{INTERNAL_BASE}/quote", name="internal_compute_quote")
    async def quote(request: web.Request) -> web.Response:
        check(request)
        forwarded = parse_model(ForwardedQuote, await json_body(request))
        return (await local.quote(forwarded.request, forwarded.limit)).response()

    @routes.get(f"{INTERNAL_BASE}/requests", name="internal_compute_list")
    async def listing(request: web.Request) -> web.Response:
        check(request)
        query = parse_query(request, ListQuery)
        if query.tenant_id is None:
            raise ApiError(400, "tenant-required", "the owner lists one tenant's requests: ?tenant_id=")
        return (await local.listing(query)).response()

    @routes.get(INTERNAL_BASE + "/requests/{request_id}", name="internal_compute_status")
    async def status(request: web.Request) -> web.Response:
        check(request)
        return (await local.status(request.match_info["request_id"])).response()

    @routes.delete(INTERNAL_BASE + "/requests/{request_id}", name="internal_compute_terminate")
    async def terminate(request: web.Request) -> web.Response:
        check(request)
        return (await local.terminate(request.match_info["request_id"])).response()

    @routes.post(INTERNAL_BASE + "/requests/{request_id}/access", name="internal_compute_access_claim")
    async def claim(request: web.Request) -> web.Response:
        check(request)
        return (await local.claim(request.match_info["request_id"])).response()

    @routes.get(f"{INTERNAL_BASE}/capacity", name="internal_compute_capacity")
    async def capacity(request: web.Request) -> web.Response:
        check(request)
        return (await local.capacity(request.query.get("tenant_id"))).response()

    @routes.get(f"{INTERNAL_BASE}/holding", name="internal_compute_holding")
    async def holding(request: web.Request) -> web.Response:
        check(request)
        return web.json_response(local.holding())

    return routes
