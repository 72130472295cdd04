"""The public /api/v1/compute handlers: authorize and audit, then run the call locally when this worker owns
the tenant, else forward it to the owner and relay its answer."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from pipeline.compute.request_ids import tenant_of
from web.api import audit_of, json_body, parse_model, parse_query, principal_of
from web.auth import Access, authorize, forbidden
from web.compute.idempotency import idempotency_key_of, request_id_for
from web.compute.local import LocalCompute, request_not_found
from web.compute.models import (
    INTERNAL_BASE,
    REPLAYED_HEADER,
    CapacityQuery,
    ComputeProvisionRequest,
    ListQuery,
    ProvisionWaitQuery,
    QuoteQuery,
    status_url,
)
from web.compute.owner import OwnerRouter
from web.compute.paging import decode_cursor
from web.errors import ApiError


def located(response: web.Response, request_id: str) -> web.Response:
    """A 201 or 202 about a compute request points at the request's status URL (``Location``)."""
    if response.status in (201, 202):
        response.headers["Location"] = status_url(request_id)
    return response


def client_left(request: web.Request) -> bool:
    """Whether the client of ``request`` closed its connection (aiohttp lets the handler run on)."""
    transport = request.transport
    return transport is None or transport.is_closing()


# -- the public handlers ----------------------------------------------------------------------------------


class ComputeApi:
    def __init__(self, local: LocalCompute, router: OwnerRouter | None, provision_wait_s: float) -> None:
        self.local = local
        self.router = router
        self.provision_wait_s = provision_wait_s

    def _owner(self, tenant_id: str | None) -> URL | None:
        if self.router is None or tenant_id is None:
            return None
        return self.router.owner(tenant_id)

    @staticmethod
    def _request_id(request: web.Request, access: Access) -> str:
        request_id = request.match_info["request_id"]
        tenant_id = tenant_of(request_id)
        if tenant_id is None:
            raise request_not_found(request_id)
        audit = audit_of(request)
        audit.tenant_id = tenant_id
        audit.detail["request_id"] = request_id
        authorize(principal_of(request), access, tenant_id)
        return request_id

    async def provision(self, request: web.Request) -> web.Response:
        query = parse_query(request, ProvisionWaitQuery)
        key = idempotency_key_of(request)
        audit = audit_of(request)
        body = await json_body(request)
        if isinstance(body, dict) and isinstance(body.get("tenant_id"), str):
            audit.tenant_id = body["tenant_id"][:64]
        provision = parse_model(ComputeProvisionRequest, body)
        compute_request = provision.compute_request()
        authorize(principal_of(request), Access.WRITE, compute_request.tenant_id)
        # derived from (tenant, key) or the name: a retry names the same record on the same owner worker
        request_id = request_id_for(compute_request.tenant_id, provision.request_name, key)
        gpu = compute_request.resources.gpu
        audit.detail.update(request_id=request_id, gpu=f"{gpu.count}x{gpu.type}" if gpu else None,
                            duration_hours=compute_request.duration_hours)
        if key is not None:
            audit.detail["idempotency_key"] = key
        wait = self.provision_wait_s if query.wait_seconds is None else query.wait_seconds
        owner = self._owner(compute_request.tenant_id)
        if owner is None:
            reply = await self.local.provision(request_id, compute_request, wait, lambda: client_left(request))
        else:
            assert self.router is not None
            reply = await self.router.forward(
                owner, "POST", f"{INTERNAL_BASE}/provision", timeout_s=wait + 60,
                body={"request_id": request_id, "request": compute_request.model_dump(mode="json"),
                      "wait_seconds": wait},
            )
            if reply.status == 503:  # the owner may be allocating it anyway: say where to look
                reply.raise_for_error(request_id=request_id, status_url=status_url(request_id))
        audit.detail["replayed"] = reply.headers.get(REPLAYED_HEADER) == "true"
        if isinstance(reply.body, dict) and reply.status < 400:
            audit.detail.update(state=reply.body.get("state"), offer_id=reply.body.get("offer_id"))
            audit.outcome = "succeeded" if reply.status == 201 else "accepted"
        reply.raise_for_error()
        return located(reply.response(), request_id)

    async def quote(self, request: web.Request) -> web.Response:
        query = parse_query(request, QuoteQuery)
        body = await json_body(request)
        if isinstance(body, dict) and isinstance(body.get("tenant_id"), str):
            audit_of(request).tenant_id = body["tenant_id"][:64]
        compute_request = parse_model(ComputeProvisionRequest, body).compute_request()
        authorize(principal_of(request), Access.READ, compute_request.tenant_id)
        owner = self._owner(compute_request.tenant_id)  # the tenant's usage, quota and budget live there
        if owner is None:
            reply = await self.local.quote(compute_request, query.limit)
        else:
            assert self.router is not None
            reply = await self.router.forward(
                owner, "POST", f"{INTERNAL_BASE}/quote",
                body={"request": compute_request.model_dump(mode="json"), "limit": query.limit},
            )
        if reply.status == 200:
            audit_of(request).outcome = "succeeded"
        reply.raise_for_error()
        return reply.response()

    async def listing(self, request: web.Request) -> web.Response:
        query = parse_query(request, ListQuery)
        principal = principal_of(request)
        tenant_id = query.tenant_id or principal.tenant_id
        if tenant_id is None:
            raise ApiError(400, "tenant-required", "a platform-admin names the tenant with ?tenant_id=",
                           {"parameter": "tenant_id"})
        authorize(principal, Access.READ, tenant_id)
        if query.cursor is not None:
            decode_cursor(query.cursor)  # refused here, before a hop to the owner
        query = query.model_copy(update={"tenant_id": tenant_id})
        owner = self._owner(tenant_id)
        if owner is None:
            reply = await self.local.listing(query)
        else:
            assert self.router is not None
            reply = await self.router.forward(owner, "GET", f"{INTERNAL_BASE}/requests",
                                              query=query.model_dump(mode="json", exclude_none=True))
        reply.raise_for_error()
        return reply.response()

    async def status(self, request: web.Request) -> web.Response:
        request_id = self._request_id(request, Access.READ)
        owner = self._owner(tenant_of(request_id))
        if owner is None:
            reply = await self.local.status(request_id)
        else:
            assert self.router is not None
            reply = await self.router.forward(owner, "GET", f"{INTERNAL_BASE}/requests/{request_id}")
        reply.raise_for_error()
        return reply.response()

    async def terminate(self, request: web.Request) -> web.Response:
        request_id = self._request_id(request, Access.WRITE)
        owner = self._owner(tenant_of(request_id))
        if owner is None:
            reply = await self.local.terminate(request_id)
        else:
            assert self.router is not None
            reply = await self.router.forward(owner, "DELETE", f"{INTERNAL_BASE}/requests/{request_id}",
                                              timeout_s=120)
        if isinstance(reply.body, dict) and reply.status < 400:
            audit_of(request).detail["state"] = reply.body.get("state")
            audit_of(request).outcome = "succeeded" if reply.status == 200 else "accepted"
        reply.raise_for_error()
        return located(reply.response(), request_id)

    async def claim(self, request: web.Request) -> web.Response:
        request_id = self._request_id(request, Access.WRITE)
        owner = self._owner(tenant_of(request_id))
        if owner is None:
            reply = await self.local.claim(request_id)
        else:
            assert self.router is not None
            reply = await self.router.forward(owner, "POST", f"{INTERNAL_BASE}/requests/{request_id}/access")
        audit_of(request).detail["delivered"] = reply.status == 200
        if reply.status == 200:
            audit_of(request).outcome = "succeeded"
        reply.raise_for_error()
        return reply.response()

    async def capacity(self, request: web.Request) -> web.Response:
        query = parse_query(request, CapacityQuery)
        principal = principal_of(request)
        tenant_id = query.tenant_id or principal.tenant_id
        if tenant_id is None and not principal.is_platform_admin:
            raise forbidden("the token names no tenant")
        authorize(principal, Access.READ, tenant_id)
        owner = self._owner(tenant_id)
        if owner is None:
            reply = await self.local.capacity(tenant_id)
        else:
            assert self.router is not None
            reply = await self.router.forward(owner, "GET", f"{INTERNAL_BASE}/capacity",
                                              query={"tenant_id": tenant_id} if tenant_id else None)
        reply.raise_for_error()
        return reply.response()
