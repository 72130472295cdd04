"""The /api/v1/compute routes: provision, list, quote, status, terminate, one-time access retrieval, capacity.

Retries: a POST with an ``Idempotency-Key`` header (or a ``request_name`` in the body) gets a request id derived
from the tenant and the key (``pipeline/compute/request_ids.py``), so a retry reaches the same owner worker and
the same record; the record (durable in the changelog table) is the idempotency record and stores the canonical
hash of the body it was created with. Same hash: the answer is rebuilt from the record, nothing is allocated
again; another hash: 422 ``idempotency-key-reused``. A quote runs the same decision and stores nothing.

Everything about a tenant's compute requests happens on the worker owning the tenant's partition: its records
(table ``compute-records``), its quota, its allocations in flight and its access details not yet handed out
live there. The worker that receives a request authenticates, authorizes and audits it (the API middleware),
then runs it itself when it owns the tenant, else forwards it to the owner's internal endpoint
(``/internal/v1/compute/...``, guarded by PEER_SECRET) and relays the answer. The tenant of
``/compute/provision/{request_id}`` is the part of the id before the ``.`` (``acme.c1f0...``).

Secret delivery (docs/compute.md, "Access details over REST"): ``POST /compute/provision`` waits up to
COMPUTE_PROVISION_WAIT_SECONDS (or ``?wait_seconds=``) for the allocation. Running by then, the 201 carries
the access details with the SSH private key and the Jupyter token, once. Otherwise 202: the allocation goes
on, and when it runs its access details wait in the owner worker's memory (never stored, never sent anywhere
else) for ONE ``POST /compute/provision/{request_id}/access`` within COMPUTE_ACCESS_CLAIM_TTL_SECONDS; after
that, or after a restart of that worker, they are gone (410) and the requester terminates and requests again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from yarl import URL

from pipeline.compute.access import AccessDetails
from pipeline.compute.catalog import CapacityClass
from pipeline.compute.lifecycle import CapacityView, ComputeRecord, ComputeState
from pipeline.compute.optimizer import FUNNEL, Decision, ExclusionReason, NoFeasibleOffer
from pipeline.compute.quota import ComputeQuotaRefused, QuotaRefusal
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    REQUEST_ID_PATTERN,
    REQUEST_NAME_PATTERN,
    idempotent_request_id,
    named_request_id,
    new_request_id,
    tenant_of,
    valid_idempotency_key,
)
from pipeline.compute.runtime import ComputeRuntime, Provisioned
from pipeline.compute.service import UnknownRequest
from pipeline.events.models import TENANT_ID_PATTERN
from pipeline.tenants.models import TenantRecord, TenantState
from web.api import Operation, audit_of, json_body, parse_model, parse_query, principal_of, tenant_not_found
from web.auth import Access, authorize, forbidden
from web.errors import PROBLEM_JSON, ApiError, error_body, problem_of
from web.peer_client import PeerClient, PeerUnavailable
from web.peers import peer_headers, peer_secret, require_peer
from web.routing import owner_of, peer_urls

logger = logging.getLogger(__name__)

API_BASE = "/api/v1/compute"
INTERNAL_BASE = "/internal/v1/compute"
#: Longest ``?wait_seconds=`` a requester may ask for.
MAX_WAIT_SECONDS = 600.0
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Set (``true``) on the answer to a retried POST that found its request (same key or name, same body).
REPLAYED_HEADER = "Idempotent-Replayed"
#: Page size of the listing: default and bounds.
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 200
#: Excluded offer ids shown per reason in a quote (the count is always complete).
QUOTE_EXCLUDED_SAMPLE = 20

TenantLookup = Callable[[str], TenantRecord | None]
ClientGone = Callable[[], bool]
PeersHolding = Callable[[], Awaitable[list[ComputeRecord]]]


# -- bodies -----------------------------------------------------------------------------------------------


class RevealedAccess(BaseModel):
    """Access details WITH their secrets: in a 201 of ``POST /compute/provision`` or the answer of
    ``POST .../access``, once. Store the private key safely; the service keeps no copy."""

    allocation_id: str
    ssh_user: str
    ssh_host: str | None
    ssh_port: int | None
    ssh_public_key: str
    ssh_fingerprint: str
    ssh_private_key: str = Field(description="OpenSSH ed25519 private key (unencrypted). Shown once, never stored.")
    jupyter_token: str = Field(description="Shown once, never stored.")
    jupyter_url: str = Field(description="The Jupyter URL with the token.")
    monitoring_url: str
    private_key_issued: bool = True


class ComputeProvisionResponse(BaseModel):
    """The answer of ``POST /compute/provision``: 201 with ``access`` (running), 202 without (not yet)."""

    request_id: str
    tenant_id: str
    state: ComputeState
    status_url: str
    access_url: str
    offer_id: str | None = None
    provider: str | None = None
    region: str | None = None
    instance_type: str | None = None
    price_per_hour: float | None = None
    running_since: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    attempts: int = 0
    access: RevealedAccess | None = None
    message: str


class ComputeStatusResponse(ComputeRecord):
    """The request's record (state and history, decision with the candidates and why every other offer
    was excluded, attempts, masked access) and whether access details still wait to be claimed."""

    access_claimable: bool = False


class ComputeProvisionRequest(ComputeRequest):
    """The body of ``POST /compute/provision`` and ``POST /compute/quote``: the request, and optionally the
    client's name for it."""

    request_name: str | None = Field(
        default=None, pattern=REQUEST_NAME_PATTERN,
        description="The client's name for this request (lower-case letters, digits, inner hyphens; at most 48): "
        "the request id becomes <tenant_id>.<request_name>, as for compute-request events. Sending the same name "
        "and body again answers with that request instead of allocating again (like an Idempotency-Key); the same "
        "name with another body is refused (422 idempotency-key-reused). Ignored by the quote.",
    )

    def compute_request(self) -> ComputeRequest:
        """The request itself (as stored; the name is in the id)."""
        return ComputeRequest.of(self.tenant_id, self)


class ProvisionWaitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_seconds: float | None = Field(
        default=None, ge=0, le=MAX_WAIT_SECONDS,
        description="How long to wait for the allocation to run before answering 202 (default: the server's "
        "COMPUTE_PROVISION_WAIT_SECONDS; 0 answers at once).",
    )


class ForwardedProvision(BaseModel):
    """What a worker forwards to the owner of a tenant's compute requests (internal route)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    request: ComputeRequest
    wait_seconds: float | None = Field(default=None, ge=0, le=MAX_WAIT_SECONDS)


class CapacityQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = Field(
        default=None, pattern=TENANT_ID_PATTERN,
        description="Whose remaining quota and budget to include (default: the token's tenant).",
    )


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = Field(
        default=None, pattern=TENANT_ID_PATTERN,
        description="Whose requests (default: the token's tenant; a platform-admin must name one).",
    )
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$",
        description="Where the page starts: next_cursor of the previous page (opaque).",
    )
    state: ComputeState | None = Field(default=None, description="Only requests in this state.")


class QuoteQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=10, ge=1, le=50, description="How many of the ranked feasible offers to show.")


class ComputeRequestSummary(BaseModel):
    """One request in the listing (the status endpoint has the whole record)."""

    request_id: str
    tenant_id: str
    state: ComputeState
    purpose: str
    gpu_type: str | None
    gpu_count: int
    vcpus: float
    duration_hours: float
    provider: str | None = None
    region: str | None = None
    instance_type: str | None = None
    price_per_hour: float | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    running_since: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    status_url: str

    @classmethod
    def of(cls, record: ComputeRecord) -> ComputeRequestSummary:
        request = record.request
        gpu = request.resources.gpu
        offer = record.offer
        return cls(
            request_id=record.request_id, tenant_id=record.tenant_id, state=record.state, purpose=request.purpose,
            gpu_type=gpu.type if gpu else None, gpu_count=gpu.count if gpu else 0, vcpus=request.resources.vcpus,
            duration_hours=request.duration_hours, provider=offer.provider if offer else None,
            region=offer.region if offer else None, instance_type=offer.instance_type if offer else None,
            price_per_hour=record.price_per_hour, created_at=record.created_at, updated_at=record.updated_at,
            running_since=record.running_since, ends_at=record.ends_at, finished_at=record.finished_at,
            status_url=status_url(record.request_id),
        )


class ComputeRequestList(BaseModel):
    """A page of a tenant's requests, newest first."""

    tenant_id: str
    items: list[ComputeRequestSummary]
    limit: int
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class QuotedOffer(BaseModel):
    """A feasible offer as ``provision`` would rank it now (rank 0 would be tried first)."""

    rank: int
    offer_id: str
    provider: str
    region: str
    zone: str | None = None
    instance_type: str
    gpu_name: str | None = None
    gpu_count: int
    vcpus: float
    memory_gib: float
    capacity_class: CapacityClass
    spot: bool
    list_price_per_hour: float = Field(description="Catalog or wholesale price, USD per hour.")
    price_per_hour: float = Field(description="After the tenant's discount, USD per hour.")
    total_cost: float = Field(description="price_per_hour x duration_hours, USD.")


class ExcludedOffers(BaseModel):
    """The offers one check of the optimizer's funnel excluded (each offer under the first check it fails)."""

    reason: ExclusionReason
    count: int
    detail: str | None = Field(default=None, description="What the check meant for this request.")
    offer_ids: list[str] = Field(description=f"The first {QUOTE_EXCLUDED_SAMPLE} of them.")


class QuoteRefusal(BaseModel):
    reason: str
    message: str
    details: dict[str, Any]


class ComputeQuote(BaseModel):
    """What ``POST /compute/provision`` would do with this body now; nothing was stored or allocated."""

    tenant_id: str
    quoted_at: AwareDatetime
    duration_hours: float
    currency: str = "USD"
    feasible: bool
    would_provision: bool = Field(description="Feasible and admitted by the tenant's quota.")
    offers_considered: int
    feasible_count: int
    offers: list[QuotedOffer]
    excluded: list[ExcludedOffers]
    binding_constraint: ExclusionReason | None = None
    message: str | None = None
    quota_refusal: QuoteRefusal | None = Field(
        default=None, description="Why provision would answer 422 quota-exceeded (null: the quota admits it).")

    @classmethod
    def of(cls, decision: Decision, refusal: QuotaRefusal | None, limit: int) -> ComputeQuote:
        offers = [
            QuotedOffer(
                rank=c.rank, offer_id=c.offer_id, provider=c.provider, region=c.region, zone=c.zone,
                instance_type=c.instance_type, gpu_name=c.gpu_name, gpu_count=c.gpu_count, vcpus=c.vcpus,
                memory_gib=c.memory_gib, capacity_class=c.capacity_class, spot=c.capacity_class == "spot",
                list_price_per_hour=c.list_price_per_hour, price_per_hour=c.price_per_hour, total_cost=c.total_cost,
            )
            for c in decision.candidates[:limit]
        ]
        excluded = [
            ExcludedOffers(reason=reason, count=len(ids), detail=decision.exclusion_details.get(reason),
                           offer_ids=ids[:QUOTE_EXCLUDED_SAMPLE])
            for reason in FUNNEL if (ids := decision.excluded.get(reason))
        ]
        return cls(
            tenant_id=decision.tenant_id, quoted_at=decision.decided_at, duration_hours=decision.duration_hours,
            feasible=decision.feasible, would_provision=decision.feasible and refusal is None,
            offers_considered=decision.offers_considered, feasible_count=decision.feasible_count, offers=offers,
            excluded=excluded, binding_constraint=decision.binding_constraint, message=decision.message,
            quota_refusal=QuoteRefusal(reason=refusal.code, message=refusal.message, details=refusal.details())
            if refusal is not None else None,
        )


class ForwardedQuote(BaseModel):
    """What a worker forwards to the owner for a quote (internal route)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request: ComputeRequest
    limit: int = Field(default=10, ge=1, le=50)


PROVISION_EXAMPLE = {
    "tenant_id": "acme",
    "resources": {"gpu": {"type": "H100", "count": 4}, "vcpus": 32, "memory_gib": 128},
    "duration_hours": 6,
    "purpose": "training",
    "spot_allowed": False,
}


# -- replies that can cross a worker hop ----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A status and JSON body, produced by the owner worker and relayed as is by a forwarding one."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model: BaseModel, status: int = 200) -> Reply:
        return cls(status, model.model_dump(mode="json"))

    @classmethod
    def error(cls, exc: ApiError) -> Reply:
        return cls(exc.status, error_body(exc.code, exc.message, exc.details, status=exc.status), dict(exc.headers))

    def raise_for_error(self, **more_details: Any) -> None:
        """An error reply as the :class:`ApiError` it was (so the audit record names its code, and the public
        route answers it as its own problem, with its own ``instance``); ``more_details`` are added to its
        details."""
        if self.status < 400:
            return
        code, message, details = problem_of(self.body) or ("error", "error", {})
        raise ApiError(self.status, code, message, {**details, **more_details}, self.headers)

    def response(self) -> web.Response:
        content_type = PROBLEM_JSON if self.status >= 400 else "application/json"
        return web.json_response(self.body, status=self.status, headers=self.headers, content_type=content_type)


async def _reply(call: Awaitable[Reply]) -> Reply:
    try:
        return await call
    except ApiError as exc:
        return Reply.error(exc)


def status_url(request_id: str) -> str:
    return f"{API_BASE}/provision/{request_id}"


def located(response: web.Response, request_id: str) -> web.Response:
    """A 201 or 202 about a compute request points at the request's status URL (``Location``)."""
    if response.status in (201, 202):
        response.headers["Location"] = status_url(request_id)
    return response


def request_not_found(request_id: str) -> ApiError:
    shown = request_id[:120]
    return ApiError(404, "compute-request-not-found", f"no compute request {shown!r}", {"request_id": shown})


def infeasible(request_id: str, decision: Decision) -> ApiError:
    return ApiError(
        422, "no-feasible-offer", decision.message or "no offer satisfies the request",
        {
            "request_id": request_id,
            "status_url": status_url(request_id),
            "binding_constraint": decision.binding_constraint.value if decision.binding_constraint else None,
            "exclusion_details": {k.value: v for k, v in decision.exclusion_details.items()},
            "excluded_counts": decision.exclusion_counts(),
            "offers_considered": decision.offers_considered,
        },
    )


def over_quota(refusal: QuotaRefusal) -> ApiError:
    """The 422 of a request the tenant's quota does not admit (nothing was stored or allocated)."""
    return ApiError(422, "quota-exceeded", refusal.message, {"reason": refusal.code, **refusal.details()})


def provision_body(record: ComputeRecord, access: AccessDetails | None, message: str) -> dict[str, Any]:
    """The POST answer; with ``access`` its secrets are in the returned dict (never log it)."""
    offer = record.offer
    body = ComputeProvisionResponse(
        request_id=record.request_id,
        tenant_id=record.tenant_id,
        state=record.state,
        status_url=status_url(record.request_id),
        access_url=f"{status_url(record.request_id)}/access",
        offer_id=offer.offer_id if offer else None,
        provider=offer.provider if offer else None,
        region=offer.region if offer else None,
        instance_type=offer.instance_type if offer else None,
        price_per_hour=record.price_per_hour,
        running_since=record.running_since,
        ends_at=record.ends_at,
        attempts=len(record.attempts),
        message=message,
    ).model_dump(mode="json")
    if access is not None:
        body["access"] = access.reveal()
    return body


def idempotency_key_of(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key`` (``None`` without one); 400 when malformed or given twice."""
    return parse_idempotency_key(request.headers.getall(IDEMPOTENCY_HEADER, []))


def parse_idempotency_key(values: Sequence[str]) -> str | None:
    """The key of the ``Idempotency-Key`` header's values (``None``: no header); 400 when malformed or twice."""
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "invalid-idempotency-key", f"the {IDEMPOTENCY_HEADER} header is given more than once")
    key = values[0]
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not valid_idempotency_key(key):
        raise ApiError(
            400, "invalid-idempotency-key",
            f"the {IDEMPOTENCY_HEADER} header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} letters, digits, '.', '_', "
            "':' or '-', starting with a letter or digit (a UUID will do)",
            {"pattern": IDEMPOTENCY_KEY_PATTERN, "max_length": MAX_IDEMPOTENCY_KEY_LENGTH},
        )
    return key


def client_left(request: web.Request) -> bool:
    """Whether the client of ``request`` closed its connection (aiohttp lets the handler run on)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def request_id_for(tenant_id: str, request_name: str | None, key: str | None) -> str:
    """The id of a new ``POST``: the client's name, else derived from (tenant, Idempotency-Key), else random.
    A name and a key together: the name is the id (and works as the key)."""
    if request_name is not None:
        return named_request_id(tenant_id, request_name)
    if key is not None:
        return idempotent_request_id(tenant_id, key)
    return new_request_id(tenant_id)


def same_request(existing: ComputeRecord, request: ComputeRequest) -> bool:
    """Whether ``request`` is a retry of the request ``existing`` records (the same body, as validated)."""
    stored = existing.request_hash or existing.request.fingerprint()  # records older than the stored hash
    return stored == request.fingerprint()


def key_reused(request_id: str) -> ApiError:
    return ApiError(
        422, "idempotency-key-reused",
        f"compute request {request_id} exists with a different body: an Idempotency-Key (or request_name) names one "
        "request; send the same body to retry it, or use a new key for a new request",
        {"request_id": request_id, "status_url": status_url(request_id)},
    )


def encode_cursor(record: ComputeRecord) -> str:
    """An opaque cursor after ``record`` in the listing's order (newest first)."""
    raw = json.dumps([record.created_at.isoformat(), record.request_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, request_id) a cursor of :func:`encode_cursor` names; 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, request_id = json.loads(raw)
        at = datetime.fromisoformat(created)
        if at.tzinfo is None or not isinstance(request_id, str) or tenant_of(request_id) is None:
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        # well-formed by the document (the pattern), but not a cursor of this API: its own code, since no JSON
        # Schema can tell a cursor this API issued from any other string
        raise ApiError(400, "invalid-cursor", "the cursor is not one this API returned; start again without it",
                       {"parameter": "cursor"}) from None
    return at, request_id


def _newest_first(record: ComputeRecord) -> tuple[datetime, str]:
    return record.created_at, record.request_id


def page_of(records: list[ComputeRecord], query: ListQuery) -> ComputeRequestList:
    """The page ``query`` asks for of one tenant's records: newest first (ties by id), after the cursor."""
    assert query.tenant_id is not None
    chosen = [r for r in records if query.state is None or r.state is query.state]
    chosen.sort(key=_newest_first, reverse=True)
    if query.cursor is not None:
        after = decode_cursor(query.cursor)
        chosen = [r for r in chosen if _newest_first(r) < after]
    page = chosen[:query.limit]
    more = len(chosen) > query.limit
    return ComputeRequestList(tenant_id=query.tenant_id, items=[ComputeRequestSummary.of(r) for r in page],
                              limit=query.limit, next_cursor=encode_cursor(page[-1]) if more and page else None)


# -- what the owner worker does --------------------------------------------------------------------------


class LocalCompute:
    """The compute operations on the worker that owns the tenant (or the only one, in tests)."""

    def __init__(
        self, runtime: ComputeRuntime, tenant: TenantLookup, peers_holding: PeersHolding | None = None
    ) -> None:
        self.runtime = runtime
        self.tenant = tenant
        self.peers_holding = peers_holding

    def _live_tenant(self, tenant_id: str) -> None:
        record = self.tenant(tenant_id)
        if record is None or record.state is TenantState.DELETED:
            raise tenant_not_found(tenant_id)

    def _record(self, request_id: str) -> ComputeRecord:
        try:
            return self.runtime.get(request_id)
        except UnknownRequest:
            raise request_not_found(request_id) from None

    async def provision(self, request_id: str, request: ComputeRequest, wait_s: float | None,
                        client_gone: ClientGone | None = None) -> Reply:
        """``client_gone``: whether the requester stopped waiting (its connection closed), checked before access
        details are put in the answer; then they go back to the vault for a retry or ``POST .../access``."""
        return await _reply(self._provision(request_id, request, wait_s, client_gone))

    def _keep_for_later(self, request_id: str, outcome: Provisioned, client_gone: ClientGone | None) -> Provisioned:
        """The outcome to answer with: without the access details when nobody is left to receive them (a client
        that timed out, about to retry with its Idempotency-Key), which wait in the vault instead of being lost."""
        if outcome.access is None or client_gone is None or not client_gone():
            return outcome
        self.runtime.vault.deposit(request_id, outcome.access)
        logger.info("compute request %s: the requester left before its access details; kept for a claim", request_id)
        return Provisioned(outcome.record, None, outcome.finished)

    async def _provision(self, request_id: str, request: ComputeRequest, wait_s: float | None,
                         client_gone: ClientGone | None = None) -> Reply:
        if tenant_of(request_id) != request.tenant_id:
            raise ApiError(400, "bad-request-id", "the request id does not belong to the request's tenant")
        self._live_tenant(request.tenant_id)
        if self.runtime.store.get(request_id) is not None:  # a retry (key, name, or a retried forward)
            return await self._rejoin(request_id, request, wait_s, client_gone)
        try:
            outcome = await self.runtime.provision(request_id, request, wait_s)
        except NoFeasibleOffer as exc:
            raise infeasible(request_id, exc.decision) from None
        except ComputeQuotaRefused as exc:
            raise over_quota(exc.refusal) from None
        except ValueError:
            # submitted meanwhile by a concurrent retry (the check and the store happen without an await between
            # them, so this is only a safety net): never allocate twice
            if self.runtime.store.get(request_id) is None:
                raise
            return await self._rejoin(request_id, request, wait_s, client_gone)
        return self._answer(request_id, self._keep_for_later(request_id, outcome, client_gone))

    async def _rejoin(self, request_id: str, request: ComputeRequest, wait_s: float | None,
                      client_gone: ClientGone | None = None) -> Reply:
        """A POST whose request id exists: the same body is a retry, answered like the first POST from the
        record as it is now (waiting for an allocation in flight); another body reuses a key (422)."""
        if not same_request(self.runtime.get(request_id), request):
            raise key_reused(request_id)
        try:
            outcome = self._keep_for_later(request_id, await self.runtime.rejoin(request_id, wait_s), client_gone)
            reply = self._answer(request_id, outcome, replay=True)
        except ApiError as exc:
            exc.headers = {**exc.headers, REPLAYED_HEADER: "true"}
            raise
        reply.headers[REPLAYED_HEADER] = "true"
        return reply

    def _answer(self, request_id: str, outcome: Provisioned, replay: bool = False) -> Reply:
        """The answer to a POST from the request's record (and the access details, if they came now)."""
        record = outcome.record
        if not outcome.finished:
            message = (
                f"reserved for {record.request.start_at.isoformat()}" if record.state is ComputeState.REQUESTED
                and record.request.start_at is not None else "allocation in progress"
            )
            return Reply(202, provision_body(
                record, None, f"{message}; poll status_url, then claim the access details ONCE at access_url "
                "(they are not stored)",
            ))
        if record.state is ComputeState.RUNNING:
            message = "running; these access details are shown once and not stored"
            if outcome.access is None:
                message = "running; the access details were already claimed"
                if replay:
                    message += " (by an earlier answer to this request, or at access_url); they exist once"
            return Reply(201, provision_body(record, outcome.access, message))
        if record.state is ComputeState.FAILED:
            if record.decision is not None and not record.decision.feasible:
                raise infeasible(request_id, record.decision)
            raise ApiError(
                502, "allocation-failed", f"no provider could allocate the request: {record.error}",
                {
                    "request_id": request_id,
                    "status_url": status_url(request_id),
                    "attempts": [
                        {"offer_id": a.offer_id, "outcome": a.outcome.value, "error": a.error} for a in record.attempts
                    ],
                },
            )
        raise ApiError(409, "compute-request-terminated", f"compute request {request_id} is {record.state.value}",
                       {"request_id": request_id, "state": record.state.value})

    async def quote(self, request: ComputeRequest, limit: int) -> Reply:
        async def run() -> Reply:
            self._live_tenant(request.tenant_id)
            decision, refusal = self.runtime.quote(request)
            return Reply.of(ComputeQuote.of(decision, refusal, limit))

        return await _reply(run())

    async def listing(self, query: ListQuery) -> Reply:
        async def run() -> Reply:
            assert query.tenant_id is not None
            if self.tenant(query.tenant_id) is None:  # a deleted tenant's requests are still listed
                raise tenant_not_found(query.tenant_id)
            return Reply.of(page_of(self.runtime.tenant_records(query.tenant_id), query))

        return await _reply(run())

    async def status(self, request_id: str) -> Reply:
        async def run() -> Reply:
            record = self._record(request_id)
            body = ComputeStatusResponse.model_validate(
                {**record.model_dump(), "access_claimable": self.runtime.vault.holds(request_id)}
            )
            return Reply.of(body)

        return await _reply(run())

    async def terminate(self, request_id: str) -> Reply:
        async def run() -> Reply:
            self._record(request_id)
            record = await self.runtime.terminate(request_id)
            body = ComputeStatusResponse.model_validate({**record.model_dump(), "access_claimable": False})
            return Reply.of(body, 200 if record.terminal else 202)

        return await _reply(run())

    async def claim(self, request_id: str) -> Reply:
        async def run() -> Reply:
            record = self._record(request_id)
            if record.state in (ComputeState.REQUESTED, ComputeState.ALLOCATING, ComputeState.PROVISIONING):
                raise ApiError(409, "access-not-ready", f"compute request {request_id} is {record.state.value}; "
                               "claim its access details once it is running", {"state": record.state.value})
            access = self.runtime.claim(request_id) if record.state is ComputeState.RUNNING else None
            if access is None:
                raise ApiError(
                    410, "access-gone",
                    f"the access details of {request_id} were handed out already, expired unclaimed, or the request "
                    f"is {record.state.value}: they are never stored; terminate the request and request again",
                    {"state": record.state.value},
                )
            return Reply(200, access.reveal())

        return await _reply(run())

    async def capacity(self, tenant_id: str | None) -> Reply:
        async def run() -> Reply:
            if tenant_id is not None:
                self._live_tenant(tenant_id)
            others = await self.peers_holding() if self.peers_holding is not None else []
            view: CapacityView = self.runtime.capacity(tenant_id, others)
            return Reply.of(view)

        return await _reply(run())

    def holding(self) -> list[dict[str, Any]]:
        return [record.model_dump(mode="json") for record in self.runtime.holding()]


# -- routing to the owner ---------------------------------------------------------------------------------


#: The owner's answer headers a forwarding worker passes on.
_RELAYED_HEADERS = frozenset({"Retry-After", REPLAYED_HEADER})


class OwnerRouter:
    """Which worker owns a tenant's compute records, and calls to its internal endpoints."""

    def __init__(self, app: Any, token: str, records_topic: Any, peer_client: PeerClient) -> None:
        self.app = app
        self.token = token
        self.records_topic = records_topic
        self.peer_client = peer_client

    def owner(self, tenant_id: str) -> URL | None:
        """URL of the worker owning ``tenant_id``'s compute records, or ``None`` when that is this worker."""
        return owner_of(self.app, tenant_id, self.records_topic)

    def peers(self) -> list[URL]:
        return peer_urls(self.app)

    async def forward(self, owner: URL, method: str, path: str, *, body: Any = None, timeout_s: float = 30.0,
                      query: dict[str, str] | None = None) -> Reply:
        url = owner.with_path(path).with_query(query or {})
        try:
            reply = await self.peer_client.request(url, method, headers=peer_headers(self.token), json_body=body,
                                                   timeout_s=timeout_s)
            payload = reply.json()
        except ApiError as exc:  # the transport rule refused the call
            return Reply.error(exc)
        except (PeerUnavailable, ValueError) as exc:
            logger.warning("compute call to the owner %s failed: %s", owner, type(exc).__name__)
            return Reply.error(ApiError(503, "owner-unavailable", "the worker owning this tenant did not answer; "
                                        "retry later", headers={"Retry-After": "5"}))
        return Reply(reply.status, payload, {k: v for k, v in reply.headers.items() if k in _RELAYED_HEADERS})

    async def holding_from_peers(self) -> list[ComputeRecord]:
        peers = self.peers()
        replies = await asyncio.gather(
            *(self.forward(peer, "GET", f"{INTERNAL_BASE}/holding", timeout_s=5) for peer in peers)
        )
        records: list[ComputeRecord] = []
        for peer, reply in zip(peers, replies, strict=True):
            if reply.status != 200 or not isinstance(reply.body, list):
                logger.warning("holding compute records from %s: HTTP %d", peer, reply.status)
                continue
            records.extend(ComputeRecord.model_validate(raw) for raw in reply.body)
        return records


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


_AUTH_ERRORS = (401, 403, 503)

IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Makes the POST safe to retry: the same key with the same body answers with the same request "
    "instead of allocating again (for the tenant; keys of different tenants never meet). 1 to "
    f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters; a UUID will do.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
               "pattern": IDEMPOTENCY_KEY_PATTERN},
    "example": "5f0c6f4e-8d1e-4c55-9a59-3d1b2f1f7a10",
}


def operations(api: ComputeApi) -> list[Operation]:
    """The compute operations (mounted with the rest of /api/v1: same auth, tenant isolation, audit, OpenAPI)."""
    return [
        Operation(
            "POST", "/compute/provision", "compute_provision",
            "Provision compute: the cheapest feasible offer, allocated with failover", api.provision, Access.WRITE,
            {201: (ComputeProvisionResponse, "Running: the access details (SSH private key, Jupyter token) are in "
                   "this response, once; they are not stored."),
             202: (ComputeProvisionResponse, "Reserved (start_at later) or still allocating: poll status_url, "
                   "then claim the access details once at access_url.")},
            errors=(400, *_AUTH_ERRORS, 404, 409, 422, 502, 500), action="compute-provision",
            body=ComputeProvisionRequest, query=ProvisionWaitQuery, example=PROVISION_EXAMPLE, tenant_in_body=True,
            headers=(IDEMPOTENCY_PARAMETER,),
            description="Chooses the cheapest feasible offer for the whole duration across the derivatives engine, "
            "the price catalogs and the in-house Kubernetes cluster (tenant discounts applied; the tenant's GPU "
            "quota and budget respected), then allocates it, failing over to the next candidates. 422 "
            "quota-exceeded: the tenant's live requests plus this one would exceed its quota of GPUs, vCPUs, memory "
            "or storage (or the tenant is marked over quota); nothing is stored. 422 no-feasible-offer names the "
            "constraint that excludes every offer; 502 allocation-failed lists the attempts. A compute-status event "
            "is announced on provisioning-events for every state change. Retrying safely: send an Idempotency-Key "
            "header (or a request_name in the body); the request id is derived from it and the tenant, so a retry "
            "with the same key and body answers with the same request (waiting for it like the first POST; header "
            "Idempotent-Replayed: true) and allocates nothing more; the access details are still handed out once. "
            "The same key with another body: 422 idempotency-key-reused; with a terminated request: 409 "
            "compute-request-terminated.",
        ),
        Operation(
            "GET", "/compute/provision", "compute_list",
            "A tenant's compute requests, newest first, a page at a time", api.listing, Access.READ,
            {200: (ComputeRequestList, "One page; next_cursor fetches the next.")},
            errors=(400, *_AUTH_ERRORS, 404, 500), query=ListQuery,
        ),
        Operation(
            "POST", "/compute/quote", "compute_quote",
            "Quote a compute request: the ranked feasible offers and why the others are excluded; allocates nothing",
            api.quote, Access.READ,
            {200: (ComputeQuote, "What provision would choose now, with prices and total cost.")},
            errors=(400, *_AUTH_ERRORS, 404, 422, 500), action="compute-quote", body=ComputeProvisionRequest,
            query=QuoteQuery, example=PROVISION_EXAMPLE, tenant_in_body=True,
            description="The same body as POST /compute/provision and the same decision (current offers, the "
            "tenant's discounts, GPU cap, budget and usage), without storing a request or allocating anything: "
            "a dry run. would_provision is false when nothing is feasible (binding_constraint says why) or when the "
            "tenant's quota would refuse it (quota_refusal).",
        ),
        Operation(
            "GET", "/compute/provision/{request_id}", "compute_status",
            "A compute request: state, chosen offer, candidates and exclusions, attempts", api.status, Access.READ,
            {200: (ComputeStatusResponse, "The request's record (access details masked).")},
            errors=(*_AUTH_ERRORS, 404, 500),
        ),
        Operation(
            "DELETE", "/compute/provision/{request_id}", "compute_terminate",
            "Terminate a compute request and release its capacity", api.terminate, Access.WRITE,
            {200: (ComputeStatusResponse, "Terminated (capacity released); repeating it changes nothing."),
             202: (ComputeStatusResponse, "The release failed and is retried automatically (state terminating).")},
            errors=(*_AUTH_ERRORS, 404, 500), action="compute-terminate",
        ),
        Operation(
            "POST", "/compute/provision/{request_id}/access", "compute_access",
            "Claim the access details of a request that ran after its POST answered (once)", api.claim,
            Access.WRITE,
            {200: (RevealedAccess, "The access details with their secrets, handed out once and forgotten.")},
            errors=(*_AUTH_ERRORS, 404, 409, 410, 500), action="compute-access-claim",
            description="Only for requests whose POST answered 202 (and for compute-request-events): the "
            "details wait in the memory of the worker that owns the tenant for COMPUTE_ACCESS_CLAIM_TTL_SECONDS.",
        ),
        Operation(
            "GET", "/compute/capacity", "compute_capacity",
            "Capacity by provider, region and resource type, and the tenant's remaining GPU quota and budget",
            api.capacity, Access.READ, {200: (CapacityView, "Pools' capacity minus the platform's allocations.")},
            errors=(400, *_AUTH_ERRORS, 404, 500), query=CapacityQuery,
        ),
    ]


# -- the owner's internal endpoints ----------------------------------------------------------------------


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


def worker_operations(app: Any, runtime: ComputeRuntime, records_topic: Any, tenants: TenantLookup,
                      web_app: web.Application, peer_client: PeerClient) -> list[Operation]:
    """The routes, backed by the worker's compute runtime (``app`` is the Faust app, for owner lookups). Also
    adds the owner's internal endpoints to the worker's root web application ``web_app`` (being initialised)."""
    settings = app.settings
    token = peer_secret(settings)
    router = OwnerRouter(app, token, records_topic, peer_client)
    local = LocalCompute(runtime, tenants, router.holding_from_peers)
    web_app.router.add_routes(internal_routes(local, token))
    return operations(ComputeApi(local, router, settings.compute_provision_wait_seconds))
