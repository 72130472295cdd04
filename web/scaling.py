"""The /api/v1/scaling routes (built as ``web.api.Operation`` records, mounted with the rest of the API).

* ``GET /scaling/policies?tenant_id=`` - the tenant's policies (a tenant token: its own; a platform admin
  without ``tenant_id``: every tenant's, gathered from every worker);
* ``GET /scaling/policies/{policy_id}?tenant_id=`` - one policy;
* ``POST /scaling/policies`` - create a policy (the body is the policy document, ``tenant_id`` in it);
* ``PUT /scaling/policies/{policy_id}`` - create or replace it; ``DELETE /scaling/policies/{policy_id}?tenant_id=``;
* ``GET /scaling/decisions?tenant_id=&workload=&limit=`` - the most recent decisions, newest first, with
  their explanation.

Same rules as the rest of the API: a platform admin may do everything, a tenant admin reads and writes its
own tenant's policies, a viewer only reads them; a tenant-scoped token may leave ``tenant_id`` out. Bodies are
validated against the policy models (``pipeline/scaling/policies.py``): 422 with every problem listed.
Writes are sent to ``scaling-policy-requests`` keyed by tenant (the owner worker's agent applies them, like
quota changes): the answer is 202. Reads are served by the worker that owns the tenant: another worker
forwards the request there (same path and token, marked as forwarded) and relays the answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from pipeline.contract.topics import SCALING_POLICY_REQUESTS
from pipeline.events.models import TenantId
from pipeline.outputs import Refused
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.policies import Policy, parse_policy
from pipeline.scaling.records import PolicyChange, PolicyDocument, PolicySet, StoredDecision, decision_event
from pipeline.tenants.models import TenantState
from pipeline.typed_table import TypedTable
from web.api import (
    Operation,
    audit_of,
    json_body,
    parse_query,
    principal_of,
    respond,
    schema_json,
    tenant_not_found,
    validation_details,
)
from web.auth import Access, Principal, authorize, forbidden
from web.errors import PROBLEM_JSON, ApiError
from web.live import HUB_KEY
from web.peer_client import PeerClient, PeerReply, PeerUnavailable
from web.routing import peer_urls
from web.state import LiveUpdate, StateReader

logger = logging.getLogger(__name__)

#: Marks a request forwarded to the owner worker (served there from local state, never forwarded again).
FORWARDED_HEADER = "X-Scaling-Forwarded"
#: A platform admin's listing: each worker answers with its own tenants' policies only.
LOCAL_HEADER = "X-Scaling-Local"
_FORWARD_TIMEOUT_S = 10.0


class ScalingBackend(Protocol):
    """What the routes need from the worker: who owns a tenant, the local scaling tables, the topic."""

    def owner(self, tenant_id: str) -> URL | None:
        """The worker owning ``tenant_id``, or None when it is this one."""

    def peers(self) -> list[URL]:
        """The other workers of the group."""

    async def policy_set(self, tenant_id: str) -> PolicySet | None: ...
    async def policy_sets(self) -> list[PolicySet]: ...
    async def decisions(self, tenant_id: str, workload: str | None) -> list[StoredDecision]:
        """Newest first."""
    async def submit(self, change: PolicyChange) -> None: ...


# -- bodies ----------------------------------------------------------------------------------------------


class PoliciesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: TenantId | None = Field(None, description="Required for a platform admin reading one tenant.")
    workload: str | None = Field(None, max_length=128, description="Only this workload's policies.")


class TenantQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: TenantId | None = Field(None, description="The policy's tenant (a tenant token may leave it out).")


class DecisionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: TenantId | None = Field(None, description="Required for a platform admin.")
    workload: str | None = Field(None, max_length=128, description="Only this workload's decisions.")
    limit: int = Field(50, ge=1, le=1000, description="At most this many decisions, newest first.")


class PolicyList(BaseModel):
    items: list[Policy]
    total: int


class PolicyResponse(BaseModel):
    policy: Policy


class PolicyAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    op: Literal["create", "replace", "delete"]
    tenant_id: str
    policy_id: str
    policy: Policy | None
    event_id: str
    policy_url: str


class DecisionList(BaseModel):
    tenant_id: str
    items: list[StoredDecision]
    total: int


POLICY_EXAMPLE: dict[str, Any] = {
    "policy_id": "api-predictive",
    "tenant_id": "acme",
    "workload": "api",
    "kind": "predictive",
    "lead_steps": 2,
    "horizon_steps": 4,
    "quantile": 0.9,
    "target_utilization": 0.7,
    "min_replicas": 1,
    "max_replicas": 20,
}


# -- live updates ----------------------------------------------------------------------------------------


def live_update(stored: StoredDecision) -> LiveUpdate | None:
    """The dashboard's ``scaling`` update for a decision that changes something, is capped or answers a scaling
    request (else None)."""
    decision = stored.decision
    capped = decision.binding.startswith(("budget:", "fair_share", "quota"))
    if decision.action == "hold" and not capped and stored.cause_event_id is None:
        return None
    return LiveUpdate("scaling", decision.tenant_id, decision_event(stored).model_dump(mode="json"))


def publish_decisions(publish: Callable[[LiveUpdate], None]) -> Callable[[str, str, StoredDecision], None]:
    """A decisions-table listener that publishes each new decision worth showing."""

    def listener(_table: str, _key: str, stored: StoredDecision) -> None:
        update = live_update(stored)
        if update is not None:
            try:
                publish(update)
            except Exception:
                logger.exception("could not publish a scaling decision to the dashboard")

    return listener


# -- the routes ------------------------------------------------------------------------------------------


def _policy_from(body: Any, path_policy_id: str | None = None) -> Policy:
    if isinstance(body, dict) and path_policy_id is not None:
        body = {**body}
        body.setdefault("policy_id", path_policy_id)
        if body["policy_id"] != path_policy_id:
            raise ApiError(422, "validation-error", "the body's policy_id differs from the path's",
                           {"errors": [{"loc": ["policy_id"], "msg": "must equal the policy id of the path",
                                        "type": "value_error"}]})
    try:
        return parse_policy(schema_json(body), strict=True)  # the documented JSON types: true is not 1
    except ValidationError as exc:
        raise ApiError(422, "validation-error", "the policy document is invalid", validation_details(exc)) from None


def _tenant_of(principal: Principal, requested: str | None, access: Access, *, required: bool) -> str | None:
    """The tenant a request is about: the query's, else a tenant token's own; authorized for ``access``."""
    if requested is None:
        if principal.tenant_id is not None and not principal.is_platform_admin:
            requested = principal.tenant_id
        elif required:
            # Not a rule of the query's schema (a tenant token may leave tenant_id out): a code of its own.
            raise ApiError(400, "tenant-required", "a platform-admin names the tenant with ?tenant_id=",
                           {"parameter": "tenant_id"})
        elif not principal.is_platform_admin:
            raise forbidden("the token is not scoped to a tenant")
        else:
            return None
    authorize(principal, access, requested)
    return requested


class _ScalingApi:
    def __init__(self, backend: ScalingBackend, reader: StateReader, peer_client: PeerClient) -> None:
        self.backend = backend
        self.reader = reader
        self.peer_client = peer_client

    # -- routing ---------------------------------------------------------------------------------------

    def _remote(self, request: web.Request, tenant_id: str) -> URL | None:
        if request.headers.get(FORWARDED_HEADER):
            return None
        return self.backend.owner(tenant_id)

    async def _forward(self, request: web.Request, owner: URL) -> web.Response:
        headers = {FORWARDED_HEADER: "1", "Authorization": request.headers.get("Authorization", "")}
        reply = await self._call(owner.with_path(request.path).with_query(request.query), headers)
        # the owner's answer as it is: an error stays application/problem+json
        content_type = PROBLEM_JSON if reply.status >= 400 else "application/json"
        return web.Response(body=reply.body, status=reply.status, content_type=content_type)

    async def _call(self, url: URL, headers: Mapping[str, str]) -> PeerReply:
        try:
            return await self.peer_client.request(url, headers=headers, timeout_s=_FORWARD_TIMEOUT_S)
        except PeerUnavailable as exc:
            raise ApiError(503, "owner-unavailable", f"the worker owning the tenant did not answer: {exc.reason}",
                           headers={"Retry-After": "5"}) from None

    async def _remote_json(self, request: web.Request, owner: URL, path: str, query: Mapping[str, str]) -> Any:
        headers = {FORWARDED_HEADER: "1", "Authorization": request.headers.get("Authorization", "")}
        reply = await self._call(owner.with_path(path).with_query(query), headers)
        try:
            if reply.status != 200:
                raise ValueError(f"HTTP {reply.status}")
            return reply.json()
        except ValueError as exc:
            raise ApiError(503, "owner-unavailable", f"the worker owning the tenant answered badly: {exc}",
                           headers={"Retry-After": "5"}) from None

    async def _live_tenant(self, tenant_id: str) -> None:
        tenant = await self.reader.tenant(tenant_id)
        if tenant is None or tenant.state is TenantState.DELETED:
            raise tenant_not_found(tenant_id)

    async def _policies(self, request: web.Request, tenant_id: str) -> dict[str, Policy]:
        """The tenant's policies, from the owner worker."""
        owner = self._remote(request, tenant_id)
        if owner is None:
            policy_set = await self.backend.policy_set(tenant_id)
            return dict(policy_set.policies) if policy_set is not None else {}
        raw = await self._remote_json(request, owner, str(request.app.router["list_scaling_policies"].url_for()),
                                      {"tenant_id": tenant_id})
        listing = PolicyList.model_validate(raw)
        return {p.policy_id: p for p in listing.items}

    def _policy_url(self, request: web.Request, tenant_id: str, policy_id: str) -> str:
        url = request.app.router["get_scaling_policy"].url_for(policy_id=policy_id).with_query(tenant_id=tenant_id)
        return str(url)

    async def _submit(self, change: PolicyChange) -> None:
        try:
            await self.backend.submit(change)
        except ApiError:
            raise
        except Exception:
            logger.exception("could not submit the policy change %s", change.event_id)
            raise ApiError(503, "command-not-submitted", "the policy change could not be submitted; retry later",
                           headers={"Retry-After": "5"}) from None

    # -- handlers --------------------------------------------------------------------------------------

    async def list_policies(self, request: web.Request) -> web.Response:
        query = parse_query(request, PoliciesQuery)
        principal = principal_of(request)
        tenant_id = _tenant_of(principal, query.tenant_id, Access.READ, required=False)
        if tenant_id is None:
            sets = await self._all_policy_sets(request)
            items = [p for s in sorted(sets, key=lambda s: s.tenant_id) for _, p in sorted(s.policies.items())]
        else:
            owner = self._remote(request, tenant_id)
            if owner is not None:
                return await self._forward(request, owner)
            await self._live_tenant(tenant_id)
            policy_set = await self.backend.policy_set(tenant_id)
            items = [p for _, p in sorted(policy_set.policies.items())] if policy_set is not None else []
        if query.workload is not None:
            items = [p for p in items if p.workload == query.workload]
        return respond(PolicyList(items=items, total=len(items)))

    async def _all_policy_sets(self, request: web.Request) -> list[PolicySet]:
        sets = {s.tenant_id: s for s in await self.backend.policy_sets()}
        if request.headers.get(LOCAL_HEADER):
            return list(sets.values())
        headers = {LOCAL_HEADER: "1", FORWARDED_HEADER: "1", "Authorization": request.headers.get("Authorization", "")}
        path = str(request.app.router["list_scaling_policies"].url_for())
        for peer in self.backend.peers():
            try:
                reply = await self.peer_client.request(peer.with_path(path), headers=headers,
                                                       timeout_s=_FORWARD_TIMEOUT_S)
                if reply.status != 200:
                    raise ValueError(f"HTTP {reply.status}")
                listing = PolicyList.model_validate(reply.json())
            except ApiError:
                raise
            except Exception as exc:
                logger.warning("policy list from %s failed: %s", peer, exc)
                continue
            for policy in listing.items:
                merged = sets.setdefault(policy.tenant_id, PolicySet(tenant_id=policy.tenant_id,
                                                                     updated_at=datetime.now(UTC)))
                merged.policies[policy.policy_id] = policy
        return list(sets.values())

    async def get_policy(self, request: web.Request) -> web.Response:
        query = parse_query(request, TenantQuery)
        policy_id = request.match_info["policy_id"]
        tenant_id = _tenant_of(principal_of(request), query.tenant_id, Access.READ, required=True)
        assert tenant_id is not None
        owner = self._remote(request, tenant_id)
        if owner is not None:
            return await self._forward(request, owner)
        await self._live_tenant(tenant_id)
        policy_set = await self.backend.policy_set(tenant_id)
        policy = policy_set.policies.get(policy_id) if policy_set is not None else None
        if policy is None:
            raise _policy_not_found(tenant_id, policy_id)
        return respond(PolicyResponse(policy=policy))

    async def _write(self, request: web.Request, path_policy_id: str | None) -> web.Response:
        body = await json_body(request)
        audit = audit_of(request)
        principal = principal_of(request)
        raw_tenant = body.get("tenant_id") if isinstance(body, dict) else None
        if isinstance(raw_tenant, str):
            audit.tenant_id = raw_tenant[:64]
            authorize(principal, Access.WRITE, raw_tenant)  # 403 before any detail of the body is revealed
        elif isinstance(body, dict) and principal.tenant_id and not principal.is_platform_admin:
            body = {**body, "tenant_id": principal.tenant_id}
            audit.tenant_id = principal.tenant_id
        policy = _policy_from(body, path_policy_id)
        authorize(principal, Access.WRITE, policy.tenant_id)
        audit.tenant_id = policy.tenant_id
        audit.detail.update(policy_id=policy.policy_id, workload=policy.workload, kind=policy.kind)
        await self._live_tenant(policy.tenant_id)
        existing = await self._policies(request, policy.tenant_id)
        if path_policy_id is None and policy.policy_id in existing:
            raise ApiError(409, "policy-exists", f"policy {policy.policy_id!r} of tenant {policy.tenant_id!r} exists; "
                           "replace it with PUT", {"tenant_id": policy.tenant_id, "policy_id": policy.policy_id})
        op: Literal["create", "replace"] = "replace" if policy.policy_id in existing else "create"
        audit.detail["op"] = op
        change = PolicyChange(event_id=uuid.uuid4().hex, tenant_id=policy.tenant_id, occurred_at=datetime.now(UTC),
                              op="put", policy_id=policy.policy_id, policy=policy, actor=principal.sub)
        await self._submit(change)
        policy_url = self._policy_url(request, policy.tenant_id, policy.policy_id)
        return respond(PolicyAccepted(op=op, tenant_id=policy.tenant_id, policy_id=policy.policy_id, policy=policy,
                                      event_id=change.event_id, policy_url=policy_url),
                       status=202, headers={"Location": policy_url})

    async def create_policy(self, request: web.Request) -> web.Response:
        return await self._write(request, None)

    async def put_policy(self, request: web.Request) -> web.Response:
        return await self._write(request, request.match_info["policy_id"])

    async def delete_policy(self, request: web.Request) -> web.Response:
        query = parse_query(request, TenantQuery)
        policy_id = request.match_info["policy_id"]
        principal = principal_of(request)
        tenant_id = _tenant_of(principal, query.tenant_id, Access.WRITE, required=True)
        assert tenant_id is not None
        audit = audit_of(request)
        audit.tenant_id = tenant_id
        audit.detail["policy_id"] = policy_id
        await self._live_tenant(tenant_id)
        existing = await self._policies(request, tenant_id)
        if policy_id not in existing:
            raise _policy_not_found(tenant_id, policy_id)
        change = PolicyChange(event_id=uuid.uuid4().hex, tenant_id=tenant_id, occurred_at=datetime.now(UTC),
                              op="delete", policy_id=policy_id, actor=principal.sub)
        await self._submit(change)
        policy_url = self._policy_url(request, tenant_id, policy_id)
        return respond(PolicyAccepted(op="delete", tenant_id=tenant_id, policy_id=policy_id, policy=None,
                                      event_id=change.event_id, policy_url=policy_url),
                       status=202, headers={"Location": policy_url})

    async def list_decisions(self, request: web.Request) -> web.Response:
        query = parse_query(request, DecisionsQuery)
        tenant_id = _tenant_of(principal_of(request), query.tenant_id, Access.READ, required=True)
        assert tenant_id is not None
        owner = self._remote(request, tenant_id)
        if owner is not None:
            return await self._forward(request, owner)
        await self._live_tenant(tenant_id)
        items = await self.backend.decisions(tenant_id, query.workload)
        return respond(DecisionList(tenant_id=tenant_id, items=items[: query.limit], total=len(items)))


def _policy_not_found(tenant_id: str, policy_id: str) -> ApiError:
    return ApiError(404, "policy-not-found", f"tenant {tenant_id!r} has no scaling policy {policy_id[:128]!r}",
                    {"tenant_id": tenant_id, "policy_id": policy_id[:128]})


_AUTH = (401, 403, 503)
#: What the write operations' description says of the Kubernetes spellings (pipeline/scaling/policies.py).
K8S_SPELLINGS = (
    "Field names pasted from an HPA v2 or a KEDA ScaledObject are accepted as well as snake_case: minReplicas / "
    "minReplicaCount, maxReplicas / maxReplicaCount, targetUtilization, averageUtilization (the HPA's percentage: "
    "70 = target_utilization 0.7), behavior.scaleUp / scaleDown with stabilizationWindowSeconds, selectPolicy and "
    "policies[].periodSeconds, desiredReplicas in schedule windows; the policy is stored and shown in snake_case. "
    "KEDA's pollingInterval, cooldownPeriod and idleReplicaCount have no equivalent and are refused (422)."
)


def scaling_operations(
    backend: ScalingBackend, reader: StateReader, peer_client: PeerClient | None = None
) -> list[Operation]:
    """The scaling routes over ``backend`` (the worker's tables, or an engine's in tests); forwarded calls go
    through ``peer_client`` (default: one of its own, plain HTTP only to loopback peers)."""
    api = _ScalingApi(backend, reader, peer_client or PeerClient())
    policy_errors = (400, *_AUTH, 404, 422, 500)
    return [
        Operation(
            "GET", "/scaling/policies", "list_scaling_policies", "List scaling policies", api.list_policies,
            Access.READ, {200: (PolicyList, "The policies, by tenant and policy id.")},
            errors=(400, *_AUTH, 404, 500), query=PoliciesQuery,
            description="A tenant token sees its own tenant's policies; a platform admin names a tenant with "
            "tenant_id, or lists every tenant's policies without it.",
        ),
        Operation(
            "POST", "/scaling/policies", "create_scaling_policy", "Create a scaling policy", api.create_policy,
            Access.WRITE, {202: (PolicyAccepted, "The policy was sent to the tenant's owner worker.")},
            errors=(*policy_errors, 409), action="create-scaling-policy", body=PolicyDocument, tenant_in_body=True,
            example=POLICY_EXAMPLE,
            description="The body is a policy document of kind target_tracking, predictive, scheduled or "
            "cost_aware (docs/scaling.md). 409 if the tenant has a policy of that id. " + K8S_SPELLINGS,
        ),
        Operation(
            "GET", "/scaling/policies/{policy_id}", "get_scaling_policy", "A scaling policy", api.get_policy,
            Access.READ, {200: (PolicyResponse, "The policy.")}, errors=(400, *_AUTH, 404, 500), query=TenantQuery,
        ),
        Operation(
            "PUT", "/scaling/policies/{policy_id}", "put_scaling_policy", "Create or replace a scaling policy",
            api.put_policy, Access.WRITE, {202: (PolicyAccepted, "The policy was sent to the tenant's owner worker.")},
            errors=policy_errors, action="put-scaling-policy", body=PolicyDocument, tenant_in_body=True,
            example=POLICY_EXAMPLE,
            description="The body is the policy document; its policy_id may be left out. " + K8S_SPELLINGS,
        ),
        Operation(
            "DELETE", "/scaling/policies/{policy_id}", "delete_scaling_policy", "Delete a scaling policy",
            api.delete_policy, Access.WRITE, {202: (PolicyAccepted, "The deletion was sent to the owner worker.")},
            errors=(400, *_AUTH, 404, 500), action="delete-scaling-policy", query=TenantQuery,
        ),
        Operation(
            "GET", "/scaling/decisions", "list_scaling_decisions", "Recent scaling decisions with explanations",
            api.list_decisions, Access.READ, {200: (DecisionList, "Decisions, newest first.")},
            errors=(400, *_AUTH, 404, 500), query=DecisionsQuery,
            description="Each decision carries its inputs (demand, utilization, replicas), the forecast and its "
            "band, every policy's desired value and reason, the bounds, the binding policy, budget or fair share, "
            "the cost, a one-line explanation, and whether it was applied to the Deployment.",
        ),
    ]


# -- backends --------------------------------------------------------------------------------------------


class EngineBackend:
    """A backend over one :class:`ScalingEngine`'s tables, owning every tenant (tests, a single process)."""

    def __init__(self, engine: ScalingEngine) -> None:
        self.engine = engine
        self.refused: list[str] = []

    def owner(self, tenant_id: str) -> URL | None:
        return None

    def peers(self) -> list[URL]:
        return []

    async def policy_set(self, tenant_id: str) -> PolicySet | None:
        return self.engine.tables.policies.get(tenant_id)

    async def policy_sets(self) -> list[PolicySet]:
        return [s for _, s in self.engine.tables.policies.items()]

    async def decisions(self, tenant_id: str, workload: str | None) -> list[StoredDecision]:
        return self.engine.recent_decisions(tenant_id, workload)

    async def submit(self, change: PolicyChange) -> None:
        try:
            self.engine.on_policy_change(change)
        except Refused as refused:
            self.refused.append(refused.detail)


class FaustScalingBackend(EngineBackend):
    """The worker's backend: routes tenants to their owner, sends changes to ``scaling-policy-requests``."""

    def __init__(self, app: Any, engine: ScalingEngine, owner: Callable[[str], URL | None],
                 send: Callable[[str, str, BaseModel], Awaitable[None]]) -> None:
        super().__init__(engine)
        self.app = app
        self._owner = owner
        self._send = send

    def owner(self, tenant_id: str) -> URL | None:
        return self._owner(tenant_id)

    def peers(self) -> list[URL]:
        return peer_urls(self.app)

    async def submit(self, change: PolicyChange) -> None:
        await self._send(SCALING_POLICY_REQUESTS, change.tenant_id, change)


def worker_operations(app: Any, backend: FaustScalingBackend, reader: StateReader,
                      decisions: TypedTable[StoredDecision], web_app: web.Application,
                      peer_client: PeerClient) -> list[Operation]:
    """The routes, backed by the worker's engine (``app`` is the Faust app); decisions stored on this worker are
    published to the dashboard's hub of ``web_app``."""

    def publish(update: LiveUpdate) -> None:
        hub = web_app.get(HUB_KEY)  # the dashboard's hub, installed on the worker's web app
        if hub is not None:
            hub.dispatch(update)

    decisions.listeners.append(publish_decisions(publish))
    return scaling_operations(backend, reader, peer_client)


__all__: Sequence[str] = ["EngineBackend", "FaustScalingBackend", "ScalingBackend", "scaling_operations",
                          "worker_operations"]
