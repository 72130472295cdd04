"""The /api/v1 sub-application: tenants, provisioning status and quotas, JSON in and out.

Every operation is declared once in :func:`operations` (method, path, access rule, audit action, body,
query and response models); the routes and the OpenAPI document (``web/openapi.py``) are both built from
that list. Authentication, authorization, readiness and the audit record of every mutating request happen in
:func:`api_middleware`, so no handler can forget them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ValidationError

from pipeline import bounded_json
from pipeline.events.models import (
    TENANT_ID_PATTERN,
    AuditEvent,
    CommandAction,
    QuotaResource,
    TenantCreated,
    Tier,
)
from pipeline.provisioners.errors import PermanentError
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.logic import provisioning_commands, refusal_to_create
from pipeline.tenants.models import QuotaRecord, TenantRecord, TenantState
from pipeline.tenants.tiers import quota_for_tier
from pipeline.usage import RECENT_WINDOWS, TenantUtilization
from web.auth import Access, Authenticator, AuthError, AuthUnavailable, Principal, authorize, unauthorized
from web.errors import ApiError, Handler, as_api_error, instance_of, route_pattern
from web.models import (
    DeleteAccepted,
    DeleteQuery,
    OverQuotaLiftAccepted,
    ProvisionAccepted,
    ProvisioningStatusResponse,
    ProvisionPlan,
    ProvisionQuery,
    ProvisionRequest,
    QuarantineReleaseAccepted,
    QuotaAccepted,
    QuotaResponse,
    TenantPage,
    TenantsQuery,
    UserPage,
    UsersQuery,
)
from web.openapi import openapi_document
from web.operations import Operation
from web.state import CommandGateway, StateReader

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Planner = Callable[[TenantCreated], dict[str, Any]]
Readiness = Callable[[], tuple[bool, str]]
Outcome = Literal["accepted", "succeeded", "refused", "failed"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TENANT_ID = re.compile(TENANT_ID_PATTERN)

OPERATIONS_KEY = web.AppKey("operations", dict)


@dataclass
class AuditContext:
    """What the audit record of a request will say; handlers add to it as they learn more."""

    action: str
    route: str
    actor: str = "anonymous"
    tenant_id: str | None = None
    outcome: Outcome | None = None  # overrides the outcome of a successful request
    detail: dict[str, Any] = field(default_factory=dict)


PRINCIPAL_KEY = web.RequestKey("principal", Principal)
AUDIT_KEY = web.RequestKey("audit", AuditContext)


def _now() -> datetime:
    return datetime.now(UTC)


# -- request helpers ---------------------------------------------------------------------------------


def validation_details(exc: ValidationError) -> dict[str, Any]:
    return {
        "errors": [
            {"loc": [str(part) for part in err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
    }


def schema_json(data: Any) -> str:
    """``data`` as JSON text for strict validation. JSON Schema's integer is any number without a fraction
    (``2.0`` is one), which pydantic's strict mode refuses: such floats are written as integers first."""

    def integral(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {key: integral(item) for key, item in value.items()}
        if isinstance(value, list):
            return [integral(item) for item in value]
        return value

    return json.dumps(integral(data))


def parse_model(model: type[M], data: Any) -> M:
    """A JSON body (as parsed by :func:`json_body`) as ``model``, with the types the OpenAPI document states:
    validated as JSON and strictly, so ``false`` is not ``0`` and ``"5"`` is not ``5`` (dates and enums are
    their JSON strings, as documented)."""
    try:
        return model.model_validate_json(schema_json(data), strict=True)
    except ValidationError as exc:
        raise ApiError(422, "validation-error", "the request body is invalid", validation_details(exc)) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    """The query string as ``model``: its values are text, converted (``limit=5``); a parameter the model does
    not declare, or one given twice, is refused like a wrong one (a misspelt ``dry_run`` must not run for
    real)."""
    repeated = sorted({name for name in request.query if len(request.query.getall(name)) > 1})
    if repeated:  # which of the values would count is a guess a client must not rely on
        raise ApiError(400, "invalid-query", "a query parameter is given more than once",
                       {"parameters": repeated})
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ApiError(400, "invalid-query", "the query string is invalid", validation_details(exc)) from None


async def json_body(request: web.Request) -> Any:
    """The request's JSON document; 413 when larger than bounded_json.MAX_DOCUMENT_BYTES, 400 when nested too
    deeply or not JSON (size and depth are checked before parsing)."""
    if (request.content_length or 0) > bounded_json.MAX_DOCUMENT_BYTES:
        raise _too_large(request.content_length or 0)
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "malformed-json", "the request body must be a JSON document")
    try:
        return bounded_json.loads(raw)
    except bounded_json.JsonRefused as exc:
        if exc.reason == "too-large":
            raise _too_large(len(raw)) from None
        if exc.reason == "too-deep":
            raise ApiError(400, "malformed-json", f"the request body has {exc.detail}") from None
        raise ApiError(400, "malformed-json", f"the request body is {exc.detail}") from None


def _too_large(size: int) -> ApiError:
    return ApiError(
        413, "payload-too-large", f"the request body has {size} bytes, more than the "
        f"{bounded_json.MAX_DOCUMENT_BYTES} accepted", {"max_bytes": bounded_json.MAX_DOCUMENT_BYTES}
    )


def respond(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status, headers=dict(headers or {}))


def tenant_not_found(tenant_id: str) -> ApiError:
    shown = tenant_id[:64]
    return ApiError(404, "tenant-not-found", f"tenant {shown!r} does not exist", {"tenant_id": shown})


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def audit_of(request: web.Request) -> AuditContext:
    return request[AUDIT_KEY]


# -- handlers ----------------------------------------------------------------------------------------


def command_planner() -> Planner:
    """The fallback dry-run plan: per backend, the provisioning command the tenant-created agent would emit."""

    def plan(event: TenantCreated) -> dict[str, Any]:
        tenant = TenantRecord(
            tenant_id=event.tenant_id,
            name=event.name,
            tier=event.tier,
            region=event.region,
            owner_user_id=event.owner_user_id,
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
            source_event_id=event.event_id,
        )
        quota = QuotaRecord(
            tenant_id=event.tenant_id,
            limits=quota_for_tier(event.tier),
            updated_at=event.occurred_at,
            updated_by=f"tier:{event.tier.value}",
        )
        commands = provisioning_commands(tenant, quota, CommandAction.CREATE, event.event_id, event.occurred_at)
        return {c.resource: {"action": c.action.value, "spec": c.spec} for c in commands}

    return plan


class _Api:
    def __init__(
        self, reader: StateReader, gateway: CommandGateway, planner: Planner, self_service_tier: Tier = Tier.FREE
    ) -> None:
        self.reader = reader
        self.gateway = gateway
        self.planner = planner
        self.self_service_tier = self_service_tier

    def _tier(self, principal: Principal, requested: Tier | None) -> Tier:
        """The tier a provisioning gets. The tier sets the quota and the fair-share weight, so choosing one is a
        platform decision: a tenant-admin (re-)provisioning its own tenant gets the self-service tier."""
        if principal.is_platform_admin:
            return requested or self.self_service_tier
        if requested is not None and requested is not self.self_service_tier:
            raise ApiError(
                403, "tier-not-allowed",
                f"only a platform-admin may choose the tier {requested.value!r}; leave it out (or ask for "
                f"{self.self_service_tier.value!r}) and ask the platform for an upgrade",
                {"requested": requested.value, "allowed": self.self_service_tier.value},
            )
        return self.self_service_tier

    async def _live_tenant(self, tenant_id: str) -> TenantRecord:
        tenant = await self.reader.tenant(tenant_id)
        if tenant is None or tenant.state is TenantState.DELETED:
            raise tenant_not_found(tenant_id)
        return tenant

    async def _send(self, what: str, call: Awaitable[None]) -> None:
        try:
            await call
        except ApiError:
            raise
        except Exception:
            logger.exception("could not submit %s", what)
            raise ApiError(
                503, "command-not-submitted", f"the {what} could not be submitted; retry later",
                headers={"Retry-After": "5"},
            ) from None

    async def provision(self, request: web.Request) -> web.Response:
        query = parse_query(request, ProvisionQuery)
        audit = audit_of(request)
        audit.detail["dry_run"] = query.dry_run
        body = await json_body(request)
        if isinstance(body, dict) and isinstance(body.get("tenant_id"), str):
            audit.tenant_id = body["tenant_id"][:64]
        req = parse_model(ProvisionRequest, body)
        authorize(principal_of(request), Access.WRITE, req.tenant_id)
        tier = self._tier(principal_of(request), req.tier)
        try:
            event = TenantCreated(
                event_id=uuid.uuid4().hex, occurred_at=_now(), **{**req.model_dump(), "tier": tier}
            )
        except ValidationError as exc:
            raise ApiError(422, "validation-error", "the request body is invalid", validation_details(exc)) from None
        audit.detail.update(tier=event.tier.value, event_id=event.event_id)
        existing = await self.reader.tenant(event.tenant_id)
        if existing is not None and existing.state is not TenantState.DELETED:
            raise ApiError(
                409, "tenant-exists", f"tenant {event.tenant_id!r} already exists ({existing.state.value})",
                {"tenant_id": event.tenant_id, "state": existing.state.value},
            )
        refused = refusal_to_create(existing, event)
        if refused is not None:
            raise ApiError(409, refused.reason, refused.detail, {"tenant_id": event.tenant_id})
        if query.dry_run:
            try:
                plan = self.planner(event)
            except PermanentError as exc:
                raise ApiError(422, "plan-refused", f"the tenant cannot be provisioned: {exc}") from None
            audit.outcome = "succeeded"
            return respond(ProvisionPlan(tenant_id=event.tenant_id, event=event.model_dump(mode="json"), plan=plan))
        await self._send("tenant-created event", self.gateway.submit_tenant(event))
        status_url = str(request.app.router["provisioning_status"].url_for(tenant_id=event.tenant_id))
        return respond(
            ProvisionAccepted(tenant_id=event.tenant_id, event_id=event.event_id, status_url=status_url),
            status=202,
            headers={"Location": status_url},
        )

    async def provisioning_status(self, request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]
        if await self.reader.tenant(tenant_id) is None:
            raise tenant_not_found(tenant_id)
        status = await self.reader.provisioning_status(tenant_id)
        return respond(ProvisioningStatusResponse.of(tenant_id, status))

    async def get_quota(self, request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]
        await self._live_tenant(tenant_id)
        quota = await self.reader.quota(tenant_id)
        if quota is None:
            raise ApiError(404, "quota-not-found", f"tenant {tenant_id!r} has no quota yet", {"tenant_id": tenant_id})
        usage, held = await asyncio.gather(self.reader.usage(tenant_id), self.reader.compute_held(tenant_id))
        return respond(QuotaResponse.of(quota, usage, held))

    async def get_utilization(self, request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]
        await self._live_tenant(tenant_id)
        utilization = await self.reader.utilization(tenant_id)
        return respond(utilization or TenantUtilization(tenant_id=tenant_id, window_seconds=0))

    async def put_quota(self, request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]
        quota = parse_model(Quota, await json_body(request))
        audit_of(request).detail["requested"] = quota.model_dump()
        await self._live_tenant(tenant_id)
        await self._send("quota change", self.gateway.set_quota(tenant_id, quota, principal_of(request).sub))
        quota_url = str(request.app.router["get_quota"].url_for(tenant_id=tenant_id))
        return respond(QuotaAccepted(tenant_id=tenant_id, requested=quota, quota_url=quota_url), status=202,
                       headers={"Location": quota_url})

    async def lift_over_quota(self, request: web.Request) -> web.Response:
        """An admin lifts an over-quota mark (the quota stays): the tenant's owner drops it and announces it."""
        tenant_id = request.match_info["tenant_id"]
        name = request.match_info["resource"]
        audit_of(request).detail["resource"] = name[:32]
        await self._live_tenant(tenant_id)
        quota = await self.reader.quota(tenant_id)
        resource = next((r for r in QuotaResource if r.value == name), None)
        if quota is None or resource is None or resource not in quota.over_quota:
            raise ApiError(
                404, "over-quota-mark-not-found", f"tenant {tenant_id!r} is not marked over quota for {name[:32]!r}",
                {"tenant_id": tenant_id, "marked": sorted(r.value for r in quota.over_quota) if quota else []},
            )
        await self._send("over-quota lift", self.gateway.lift_over_quota(tenant_id, [resource],
                                                                         principal_of(request).sub))
        quota_url = str(request.app.router["get_quota"].url_for(tenant_id=tenant_id))
        return respond(OverQuotaLiftAccepted(tenant_id=tenant_id, resource=resource, quota_url=quota_url),
                       status=202, headers={"Location": quota_url})

    async def release_quarantine(self, request: web.Request) -> web.Response:
        """An admin releases a quarantined workload: the tenant's owner ends its isolation and announces it."""
        tenant_id = request.match_info["tenant_id"]
        resource_id = request.match_info["resource_id"]
        audit_of(request).detail["resource_id"] = resource_id[:128]
        await self._live_tenant(tenant_id)
        log = await self.reader.anomalies(tenant_id)
        quarantined = log.quarantined if log is not None else []
        if resource_id not in quarantined:
            raise ApiError(
                404, "not-quarantined", f"tenant {tenant_id!r} has no quarantined workload {resource_id[:128]!r}",
                {"tenant_id": tenant_id, "quarantined": quarantined[:100]},
            )
        await self._send("quarantine release", self.gateway.release_quarantine(tenant_id, resource_id,
                                                                               principal_of(request).sub))
        tenant_url = str(request.app.router["get_tenant"].url_for(tenant_id=tenant_id))
        return respond(QuarantineReleaseAccepted(tenant_id=tenant_id, resource_id=resource_id, tenant_url=tenant_url),
                       status=202, headers={"Location": tenant_url})

    async def delete_tenant(self, request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]
        query = parse_query(request, DeleteQuery)
        audit_of(request).detail["purge"] = query.purge
        tenant = await self.reader.tenant(tenant_id)
        if not (query.purge and tenant is not None and tenant.data_retained):  # a purge may follow a plain delete
            await self._live_tenant(tenant_id)
        await self._send(
            "tenant deletion", self.gateway.delete_tenant(tenant_id, query.purge, principal_of(request).sub)
        )
        status_url = str(request.app.router["provisioning_status"].url_for(tenant_id=tenant_id))
        return respond(DeleteAccepted(tenant_id=tenant_id, purge=query.purge, status_url=status_url), status=202,
                       headers={"Location": status_url})

    async def list_tenants(self, request: web.Request) -> web.Response:
        query = parse_query(request, TenantsQuery)
        visible = principal_of(request).visible_tenants()
        page = await self.reader.tenants(query.offset, query.limit, visible)
        return respond(TenantPage(items=list(page.items), total=page.total, offset=query.offset, limit=query.limit))

    async def get_tenant(self, request: web.Request) -> web.Response:
        tenant = await self._live_tenant(request.match_info["tenant_id"])
        return respond(tenant)

    async def list_users(self, request: web.Request) -> web.Response:
        query = parse_query(request, UsersQuery)
        tenant_id = request.match_info["tenant_id"]
        await self._live_tenant(tenant_id)
        found = await self.reader.users(tenant_id)
        users = found.users if found else []
        return respond(UserPage(items=users[query.offset : query.offset + query.limit], total=len(users),
                                offset=query.offset, limit=query.limit))

    async def openapi(self, request: web.Request) -> web.Response:
        suffix = "/openapi.json"
        prefix = request.path[: -len(suffix)] if request.path.endswith(suffix) else ""
        document = openapi_document(request.app[OPERATIONS_KEY].values(), server_url=prefix or "/")
        return web.json_response(document)


_AUTH_ERRORS = (401, 403, 503)
_ALL = (500,)

PROVISION_EXAMPLE = {
    "tenant_id": "acme",
    "name": "Acme Corporation",
    "tier": "standard",
    "region": "eu-west-1",
    "owner_user_id": "user-42",
}
QUOTA_EXAMPLE = {"cpu_cores": 8, "memory_gib": 32, "gpus": 1, "storage_gib": 200}


def operations(api: _Api) -> list[Operation]:
    """Every operation of the API (the single source of the routes and of the OpenAPI document)."""
    return [
        Operation(
            "POST", "/provision", "provision", "Provision a tenant (or plan it with ?dry_run=true)",
            api.provision, Access.WRITE,
            {202: (ProvisionAccepted, "The tenant-created event was sent; poll status_url."),
             200: (ProvisionPlan, "Dry run: what would be created, nothing was sent.")},
            errors=(400, *_AUTH_ERRORS, 409, 422, *_ALL), action="provision-tenant", body=ProvisionRequest,
            query=ProvisionQuery, example=PROVISION_EXAMPLE, tenant_in_body=True,
            description="Same path as a tenant-created event on the platform stream: the tenant, its quota from "
            "its tier and one pending status and command per resource follow asynchronously.",
        ),
        Operation(
            "GET", "/tenants", "list_tenants", "List tenants (paged; a tenant token sees only its own tenant)",
            api.list_tenants, Access.READ, {200: (TenantPage, "A page of tenants, ordered by tenant id.")},
            errors=(400, *_AUTH_ERRORS, *_ALL), query=TenantsQuery,
        ),
        Operation(
            "GET", "/tenants/{tenant_id}", "get_tenant", "A tenant's record", api.get_tenant, Access.READ,
            {200: (TenantRecord, "The tenant.")}, errors=(*_AUTH_ERRORS, 404, *_ALL), tenant_in_path=True,
        ),
        Operation(
            "DELETE", "/tenants/{tenant_id}", "delete_tenant", "Delete a tenant (and its data with ?purge=true)",
            api.delete_tenant, Access.WRITE,
            {202: (DeleteAccepted, "The deletion was sent; resources are torn down in reverse order.")},
            errors=(400, *_AUTH_ERRORS, 404, *_ALL), action="delete-tenant", tenant_in_path=True, query=DeleteQuery,
        ),
        Operation(
            "GET", "/tenants/{tenant_id}/provisioning-status", "provisioning_status",
            "Per-resource provisioning status and the overall status", api.provisioning_status, Access.READ,
            {200: (ProvisioningStatusResponse, "The status of every resource of the tenant.")},
            errors=(*_AUTH_ERRORS, 404, *_ALL), tenant_in_path=True,
        ),
        Operation(
            "GET", "/tenants/{tenant_id}/users", "list_users",
            "The tenant's users and the status of their access on each backend (paged)", api.list_users,
            Access.READ, {200: (UserPage, "A page of the tenant's users not yet deleted, ordered by user id.")},
            errors=(400, *_AUTH_ERRORS, 404, *_ALL), tenant_in_path=True, query=UsersQuery,
            description="Users come from user-created-events; each backend holding per-user access (Kubernetes "
            "RoleBinding, Pulsar namespace permission, OpenProject membership) reports pending, provisioning, "
            "retrying, waiting (its backend unreachable), ready or failed for its grant, deleting or deleted for its "
            "revoke.",
        ),
        Operation(
            "GET", "/tenants/{tenant_id}/quota", "get_quota", "Quota limits, over-quota marks and usage totals",
            api.get_quota, Access.READ, {200: (QuotaResponse, "The tenant's quota and current usage.")},
            errors=(*_AUTH_ERRORS, 404, *_ALL), tenant_in_path=True,
        ),
        Operation(
            "GET", "/tenants/{tenant_id}/utilization", "get_utilization",
            f"The last {RECENT_WINDOWS} utilization windows of each workload of a tenant", api.get_utilization,
            Access.READ,
            {200: (TenantUtilization, "Per workload, its most recent windows (oldest first) up to its latest sample.")},
            errors=(*_AUTH_ERRORS, 404, *_ALL), tenant_in_path=True,
        ),
        Operation(
            "PUT", "/tenants/{tenant_id}/quota", "put_quota", "Replace a tenant's quota (platform-admin only)",
            api.put_quota, Access.PLATFORM,
            {202: (QuotaAccepted, "The quota change was sent to the tenant's owner worker.")},
            errors=(400, *_AUTH_ERRORS, 404, 422, *_ALL), action="set-quota", tenant_in_path=True, body=Quota,
            example=QUOTA_EXAMPLE,
        ),
        Operation(
            "DELETE", "/tenants/{tenant_id}/quota/over-quota/{resource}", "lift_over_quota",
            "Lift an over-quota mark (platform-admin only)", api.lift_over_quota, Access.PLATFORM,
            {202: (OverQuotaLiftAccepted, "The lift was sent to the tenant's owner worker.")},
            errors=(*_AUTH_ERRORS, 404, *_ALL), action="lift-over-quota", tenant_in_path=True,
            description="resource: cpu_cores, memory_gib, gpus or storage_gib. The mark goes, the quota stays: "
            "new provisioning, new compute and scale-ups gated by the mark are allowed again until the next "
            "quota-exceeded event marks the tenant again. Announced on provisioning-events (kind "
            "quota-enforcement, status under-quota, detail.lifted_by admin). 404 when the tenant is not marked "
            "over quota for that resource.",
        ),
        Operation(
            "DELETE", "/tenants/{tenant_id}/quarantine/{resource_id}", "release_quarantine",
            "Release a quarantined workload (platform-admin only)", api.release_quarantine, Access.PLATFORM,
            {202: (QuarantineReleaseAccepted, "The release was sent to the tenant's owner worker.")},
            errors=(*_AUTH_ERRORS, 404, *_ALL), action="release-quarantine", tenant_in_path=True,
            description="resource_id: the workload a critical resource anomaly quarantined (the anomaly's "
            "resource_id). The workload leaves the tenant's quarantined list and the scaling engine's hold at its "
            "policy floor ends; announced on "
            "provisioning-events (kind anomaly-reaction, status released, detail.released_by admin). 404 "
            "not-quarantined when the workload is not quarantined.",
        ),
        Operation(
            "GET", "/openapi.json", "openapi", "This OpenAPI document", api.openapi, Access.PUBLIC,
            {200: (None, "The OpenAPI 3.1 document of this API.")}, errors=_ALL,
        ),
    ]


# -- middleware --------------------------------------------------------------------------------------


def _operation_of(request: web.Request) -> Operation | None:
    route = request.match_info.route
    if route is None or route.name is None:
        return None
    ops: dict[str, Operation] = request.app[OPERATIONS_KEY] if OPERATIONS_KEY in request.app else {}
    return ops.get(route.name)


def _outcome(status: int) -> Outcome:
    if status < 400:
        return "accepted"
    return "refused" if status < 500 else "failed"


def api_middleware(auth: Authenticator, gateway: CommandGateway, readiness: Readiness | None) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        op = _operation_of(request)
        mutating = request.method not in SAFE_METHODS
        audit = AuditContext(action=op.action if op and op.action else "unknown-route", route=route_pattern(request))
        request[AUDIT_KEY] = audit
        error: ApiError | None = None
        try:
            if op is not None and op.access is not Access.PUBLIC:
                tenant_id = request.match_info.get("tenant_id") if op.tenant_in_path else None
                audit.tenant_id = tenant_id[:64] if tenant_id is not None else None
                try:
                    principal = await auth.authenticate_header(request.headers.get("Authorization"))
                except AuthError as exc:
                    raise unauthorized(str(exc)) from None
                except AuthUnavailable as exc:
                    raise ApiError(503, "auth-unavailable", str(exc), headers={"Retry-After": "5"}) from None
                request[PRINCIPAL_KEY] = principal
                audit.actor = principal.sub
                authorize(principal, op.access, tenant_id)
                if tenant_id is not None and not _TENANT_ID.fullmatch(tenant_id):
                    raise tenant_not_found(tenant_id)
                if readiness is not None:
                    ready, reason = _check(readiness)
                    if not ready:
                        raise ApiError(503, "not-ready", f"the worker is not ready: {reason}",
                                       headers={"Retry-After": "5"})
            response = await handler(request)
        except Exception as exc:
            error = as_api_error(exc, request)
            response = error.response(instance_of(request))
        if mutating:
            if op is not None and op.tenant_in_body and audit.tenant_id is None:
                audit.tenant_id = await _body_tenant(request)
            if op is None and audit.actor == "anonymous":
                audit.actor = await _actor(auth, request)
            await _audit(gateway, request, audit, response.status, error)
        return response

    return middleware


def _check(readiness: Readiness) -> tuple[bool, str]:
    try:
        return readiness()
    except Exception:
        logger.exception("the readiness check failed")
        return False, "the readiness check failed"


async def _body_tenant(request: web.Request) -> str | None:
    """The tenant a refused request's body names, for its audit record (None if there is none)."""
    try:
        body = bounded_json.loads(await request.read())
    except Exception:
        return None
    tenant_id = body.get("tenant_id") if isinstance(body, dict) else None
    return tenant_id[:64] if isinstance(tenant_id, str) else None


async def _actor(auth: Authenticator, request: web.Request) -> str:
    """Who sent a mutating request to no route, if its token is valid (for the audit record only)."""
    try:
        return (await auth.authenticate_header(request.headers.get("Authorization"))).sub
    except Exception:
        return "anonymous"


async def _audit(
    gateway: CommandGateway, request: web.Request, ctx: AuditContext, status: int, error: ApiError | None
) -> None:
    detail: dict[str, Any] = {"method": request.method, "route": ctx.route, "status": status, **ctx.detail}
    if error is not None:
        detail["error_code"] = error.code
        detail["reason"] = error.message
        if "error_id" in error.details:
            detail["error_id"] = error.details["error_id"]
    record = AuditEvent(
        event_id=uuid.uuid4().hex,
        occurred_at=_now(),
        actor=ctx.actor,
        action=ctx.action,
        tenant_id=ctx.tenant_id,
        outcome=ctx.outcome if ctx.outcome and status < 400 else _outcome(status),
        detail=detail,
    )
    try:
        await gateway.audit(record)
    except Exception:
        logger.exception("could not write the audit record %s", record.model_dump_json())


# -- the application ---------------------------------------------------------------------------------


def build_api(
    reader: StateReader,
    gateway: CommandGateway,
    auth: Authenticator,
    planner: Planner | None,
    *,
    readiness: Readiness | None = None,
    extra_operations: Sequence[Operation] = (),
    self_service_tier: Tier = Tier.FREE,
) -> web.Application:
    """The /api/v1 sub-application (mount it with ``root.add_subapp("/api/v1", api)``).

    ``planner`` gives the dry-run plan of a tenant (per backend, what would be created); without one, the
    dry run shows the provisioning commands that would be emitted. ``readiness`` (optional) makes data
    routes answer 503 while the worker is not ready to serve its tables. ``extra_operations`` are the routes of
    other resources (scaling, compute), built by their own modules with the same ``Operation`` record, so
    they share authentication, tenant isolation, audit and the OpenAPI document. ``self_service_tier`` is the
    only tier a tenant-admin may provision its own tenant with.
    """
    api = _Api(reader, gateway, planner or command_planner(), self_service_tier)
    app = web.Application(middlewares=[api_middleware(auth, gateway, readiness)])
    ops = [*operations(api), *extra_operations]
    app[OPERATIONS_KEY] = {op.name: op for op in ops}
    for op in ops:
        app.router.add_route(op.method, op.path, op.handler, name=op.name)
    return app


__all__ = ["Operation", "Planner", "Readiness", "build_api", "command_planner", "operations"]
