"""The bodies, queries and limits of the /api/v1/compute routes and of the owner's internal endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.compute.catalog import CapacityClass
from pipeline.compute.lifecycle import ComputeRecord, ComputeState, ReservationTerms
from pipeline.compute.optimizer import FUNNEL, Decision, ExclusionReason
from pipeline.compute.quota import QuotaRefusal
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import REQUEST_ID_PATTERN, REQUEST_NAME_PATTERN
from pipeline.events.models import TENANT_ID_PATTERN

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


def status_url(request_id: str) -> str:
    return f"{API_BASE}/provision/{request_id}"


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
    reservation: ReservationTerms | None = Field(
        default=None, description="For a request starting later: what is held from now (quota, budget) and what "
        "is not (capacity: the offer is chosen again at start_at).")
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
    list_price_per_hour: float = Field(
        description="Catalog or wholesale price of the machine plus its storage part, USD per hour.")
    storage_price_per_hour: float = Field(
        default=0.0, description="The storage part of list_price_per_hour: requested GiB x the provider's "
        "storage price (0 where the provider does not price storage), USD per hour.")
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
                list_price_per_hour=c.list_price_per_hour, storage_price_per_hour=c.storage_price_per_hour,
                price_per_hour=c.price_per_hour, total_cost=c.total_cost,
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
