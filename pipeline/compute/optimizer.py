"""The choice: the cheapest feasible offer for the whole duration, and why every other offer lost.

Semantics (the brute-force test in ``tests/pipeline/compute/test_optimizer.py`` re-implements them):

* An offer is *feasible* when it passes every check of the funnel below, in this order; an excluded
  offer is reported under the first check it fails:

  ``gpu_type`` (same accelerator name, case-insensitive; a CPU-only request takes CPU-only machines)
  -> ``gpu_count`` (>= requested, one machine) -> ``vcpus`` -> ``memory`` -> ``storage`` (only when the
  offer states a maximum) -> ``provider`` (allow/deny lists) -> ``region`` (allow/deny lists)
  -> ``spot`` (spot offers only when ``spot_allowed``) -> ``capacity`` (known availability of 0)
  -> ``price_cap`` (effective price > request's ``max_price_per_hour``) -> ``tenant_price_cap``
  -> ``quota`` (offer's GPUs > tenant's ``max_gpus`` - GPUs in use) -> ``budget`` (total cost > remaining).

* Hourly price = the machine's list/wholesale price + requested storage GiB x the offer's storage price
  (where the provider prices storage). Effective price = hourly price x (1 - tenant's negotiated discount
  for the provider). Total cost = effective price x duration hours, compared at micro-dollar resolution.
* Ranking key: (total cost, failure count of the offer, offer id) ascending; the offer id makes the
  order total and deterministic.
* When nothing is feasible, ``binding_constraint`` is the funnel check at which the set of remaining
  offers became empty and ``message`` explains it (the REST layer returns it as a 422).

Speed: offers are indexed once per :class:`~pipeline.compute.catalog.OfferBook` version, grouped by GPU
type, as flat tuples; a decision scans only the requested GPU type's group (the other groups are excluded
as ``gpu_type`` in bulk from precomputed id lists).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from pipeline.compute.catalog import CapacityClass, Offer, OfferBook
from pipeline.compute.request import ComputeRequest, normalize_name

_EPS = 1e-9


class ExclusionReason(StrEnum):
    """Why an offer is not a candidate, in funnel order."""

    GPU_TYPE = "gpu_type"
    GPU_COUNT = "gpu_count"
    VCPUS = "vcpus"
    MEMORY = "memory"
    STORAGE = "storage"
    PROVIDER = "provider"
    REGION = "region"
    SPOT = "spot"
    CAPACITY = "capacity"
    PRICE_CAP = "price_cap"
    TENANT_PRICE_CAP = "tenant_price_cap"
    QUOTA = "quota"
    BUDGET = "budget"


FUNNEL: tuple[ExclusionReason, ...] = tuple(ExclusionReason)


class TenantPolicy(BaseModel):
    """Per-tenant cap and negotiated discounts (a simple cap until the scaling issue's budget exists).

    ``budget_usd`` is the tenant's budget for the current period; what is already spent or committed
    comes from :class:`TenantUsage`. ``discounts`` maps provider -> fraction off (0.15 = 15 % off).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    tenant_id: str
    max_gpus: int | None = Field(default=None, ge=0)
    max_price_per_hour: float | None = Field(default=None, gt=0)
    budget_usd: float | None = Field(default=None, ge=0)
    discounts: dict[str, float] = Field(default_factory=dict)

    @field_validator("discounts")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for provider, fraction in value.items():
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"discount for {provider} must be in [0, 1), got {fraction}")
            out[normalize_name(provider)] = fraction
        return out

    def multiplier(self, provider: str) -> float:
        return 1.0 - self.discounts.get(provider, 0.0)


class TenantComputeSettings(BaseModel):
    """What configuration says about a tenant (setting ``COMPUTE_TENANT_POLICIES``, JSON: tenant id or
    ``"*"`` -> these fields). ``max_gpus`` can only lower the tenant's quota (the quota table's ``gpus``
    is the cap); ``budget_usd`` is per budget period (``COMPUTE_BUDGET_PERIOD``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_gpus: int | None = Field(default=None, ge=0)
    max_price_per_hour: float | None = Field(default=None, gt=0)
    budget_usd: float | None = Field(default=None, ge=0)
    discounts: dict[str, float] = Field(default_factory=dict)

    @field_validator("discounts")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        for provider, fraction in value.items():
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"discount for {provider} must be in [0, 1), got {fraction}")
        return value

    def policy(self, tenant_id: str, quota_gpus: int | None) -> TenantPolicy:
        """The tenant's policy: GPU cap = the quota's GPUs (``None``: no quota record, so 0: fail closed),
        lowered by ``max_gpus`` when configured."""
        cap = 0 if quota_gpus is None else quota_gpus
        if self.max_gpus is not None:
            cap = min(cap, self.max_gpus)
        return TenantPolicy(
            tenant_id=tenant_id,
            max_gpus=cap,
            max_price_per_hour=self.max_price_per_hour,
            budget_usd=self.budget_usd,
            discounts=dict(self.discounts),
        )


class TenantUsage(BaseModel):
    """What the tenant holds now: GPUs of active allocations, and spend (spent + committed) in USD."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    gpus_in_use: int = Field(default=0, ge=0)
    spent_usd: float = Field(default=0.0, ge=0)


class Candidate(BaseModel):
    """A feasible offer, ranked (rank 0 = chosen)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    rank: int
    offer_id: str
    provider: str
    region: str
    zone: str | None = None
    instance_type: str
    capacity_class: CapacityClass
    gpu_name: str | None = None
    gpu_count: int = 0
    vcpus: float
    memory_gib: float
    list_price_per_hour: float
    #: The storage part of ``list_price_per_hour`` (requested GiB x the offer's storage price; 0 unpriced).
    storage_price_per_hour: float = 0.0
    price_per_hour: float
    total_cost: float
    failures: int = 0


class Decision(BaseModel):
    """The choice and its explanation (stored in the record, returned by the status endpoint).

    ``candidates`` holds the best ``max_candidates`` feasible offers in rank order (``feasible_count``
    says how many there were); ``excluded`` lists every excluded offer id under its reason and
    ``exclusion_details`` says what each reason meant for this request.
    """

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    tenant_id: str
    decided_at: AwareDatetime
    duration_hours: float
    offers_considered: int
    feasible_count: int
    candidates: list[Candidate]
    excluded: dict[ExclusionReason, list[str]]
    exclusion_details: dict[ExclusionReason, str]
    binding_constraint: ExclusionReason | None = None
    message: str | None = None

    @property
    def feasible(self) -> bool:
        return bool(self.candidates)

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def reason_for(self, offer_id: str) -> ExclusionReason | None:
        for reason, ids in self.excluded.items():
            if offer_id in ids:
                return reason
        return None

    def exclusion_counts(self) -> dict[str, int]:
        return {reason.value: len(ids) for reason, ids in self.excluded.items()}

    def raise_if_infeasible(self) -> Decision:
        if not self.candidates:
            raise NoFeasibleOffer(self)
        return self


class NoFeasibleOffer(Exception):
    """No offer satisfies the request; ``str(exc)`` is the 422 message, ``.decision`` the explanation."""

    http_status = 422

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message or "no feasible offer")
        self.decision = decision
        self.constraint = decision.binding_constraint


class FailureHistory(Mapping[str, int]):
    """Allocation failures per offer id (the tie-breaker). ``to_dict``/``from_dict`` for a table."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts: dict[str, int] = dict(counts or {})

    def record_failure(self, offer_id: str) -> None:
        self._counts[offer_id] = self._counts.get(offer_id, 0) + 1

    def __getitem__(self, key: str) -> int:
        return self._counts[key]

    def get(self, key: str, default: Any = 0) -> Any:
        return self._counts.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def to_dict(self) -> dict[str, int]:
        return dict(self._counts)


class _Entry(NamedTuple):
    offer_id: str
    provider: str
    region: str
    gpu_count: int
    vcpus: float
    memory_gib: float
    max_storage_gib: float | None
    spot: bool
    price: float
    storage_price: float
    available: int | None
    offer: Offer


class OfferIndex:
    """Offers grouped by normalised GPU type (``None`` = CPU-only) as flat tuples, built once."""

    def __init__(self, offers: Sequence[Offer]) -> None:
        groups: dict[str | None, list[_Entry]] = {}
        for offer in offers:
            key = normalize_name(offer.gpu_name) if offer.gpu_name and offer.gpu_count > 0 else None
            groups.setdefault(key, []).append(
                _Entry(
                    offer.offer_id,
                    normalize_name(offer.provider),
                    normalize_name(offer.region),
                    offer.gpu_count,
                    offer.vcpus,
                    offer.memory_gib,
                    offer.max_storage_gib,
                    offer.capacity_class == "spot",
                    offer.price_per_hour,
                    offer.storage_price_per_gib_hour or 0.0,
                    offer.available,
                    offer,
                )
            )
        self.groups: dict[str | None, tuple[_Entry, ...]] = {k: tuple(v) for k, v in groups.items()}
        self.size = len(offers)
        self.gpu_types = sorted({o.gpu_name for o in offers if o.gpu_name and o.gpu_count > 0})
        self._others: dict[str | None, list[str]] = {}

    def others(self, key: str | None) -> list[str]:
        """Ids of every offer outside GPU group ``key`` (excluded as ``gpu_type`` in bulk)."""
        ids = self._others.get(key)
        if ids is None:
            ids = [e.offer_id for k, group in self.groups.items() if k != key for e in group]
            self._others[key] = ids
        return ids


_book_indexes: weakref.WeakKeyDictionary[OfferBook, tuple[int, OfferIndex]] = weakref.WeakKeyDictionary()


def index_for(offers: OfferIndex | OfferBook | Sequence[Offer]) -> OfferIndex:
    """The index of ``offers``; an :class:`OfferBook`'s index is cached until its version changes."""
    if isinstance(offers, OfferIndex):
        return offers
    if isinstance(offers, OfferBook):
        cached = _book_indexes.get(offers)
        if cached is not None and cached[0] == offers.version:
            return cached[1]
        index = OfferIndex(offers.offers())
        _book_indexes[offers] = (offers.version, index)
        return index
    return OfferIndex(offers)


def cost_key(price_per_hour: float, hours: float) -> int:
    """Total cost in micro-dollars (the ranking's resolution)."""
    return round(price_per_hour * hours * 1_000_000)


def choose(
    request: ComputeRequest,
    offers: OfferIndex | OfferBook | Sequence[Offer],
    *,
    policy: TenantPolicy | None = None,
    usage: TenantUsage | None = None,
    failures: Mapping[str, int] | None = None,
    now: datetime | None = None,
    max_candidates: int | None = 50,
) -> Decision:
    """Rank the feasible offers for ``request`` and give the reason for every excluded one.

    Pure apart from reading ``now`` (default: the current UTC time). Never raises for an infeasible
    request: check ``decision.feasible`` or call ``decision.raise_if_infeasible()``.
    """
    index = index_for(offers)
    policy = policy or TenantPolicy(tenant_id=request.tenant_id)
    usage = usage or TenantUsage()
    failures = failures or {}
    res = request.resources
    gpu_key = request.gpu_type_key
    need_gpus = res.gpu_count
    need_vcpus = res.vcpus
    need_mem = res.memory_gib
    need_storage = res.storage_gib
    allow_p = frozenset(request.providers) if request.providers is not None else None
    deny_p = frozenset(request.exclude_providers)
    allow_r = frozenset(request.regions) if request.regions is not None else None
    deny_r = frozenset(request.exclude_regions)
    spot_ok = request.spot_allowed
    cap = request.max_price_per_hour
    tenant_cap = policy.max_price_per_hour
    gpu_room = None if policy.max_gpus is None else policy.max_gpus - usage.gpus_in_use
    remaining = None if policy.budget_usd is None else policy.budget_usd - usage.spent_usd
    hours = request.duration_hours
    discounts = policy.discounts

    excluded: dict[ExclusionReason, list[str]] = {}
    other_ids = index.others(gpu_key)
    if other_ids:
        excluded[ExclusionReason.GPU_TYPE] = list(other_ids)
    by_reason: list[list[str]] = [[] for _ in FUNNEL]
    (_, x_count, x_vcpus, x_mem, x_storage, x_prov, x_region, x_spot, x_capacity, x_cap, x_tcap, x_quota,
     x_budget) = by_reason
    feasible: list[tuple[int, int, str, float, _Entry]] = []
    for entry in index.groups.get(gpu_key, ()):
        oid = entry.offer_id
        if entry.gpu_count < need_gpus:
            x_count.append(oid)
        elif entry.vcpus < need_vcpus:
            x_vcpus.append(oid)
        elif entry.memory_gib < need_mem:
            x_mem.append(oid)
        elif entry.max_storage_gib is not None and entry.max_storage_gib < need_storage:
            x_storage.append(oid)
        elif (allow_p is not None and entry.provider not in allow_p) or entry.provider in deny_p:
            x_prov.append(oid)
        elif (allow_r is not None and entry.region not in allow_r) or entry.region in deny_r:
            x_region.append(oid)
        elif entry.spot and not spot_ok:
            x_spot.append(oid)
        elif entry.available is not None and entry.available <= 0:
            x_capacity.append(oid)
        else:
            price = (entry.price + need_storage * entry.storage_price) * (1.0 - discounts.get(entry.provider, 0.0))
            if cap is not None and price > cap + _EPS:
                x_cap.append(oid)
            elif tenant_cap is not None and price > tenant_cap + _EPS:
                x_tcap.append(oid)
            elif gpu_room is not None and entry.gpu_count > gpu_room:
                x_quota.append(oid)
            elif remaining is not None and price * hours > remaining + _EPS:
                x_budget.append(oid)
            else:
                feasible.append((cost_key(price, hours), failures.get(oid, 0), oid, price, entry))
    for reason, ids in zip(FUNNEL, by_reason, strict=True):
        if ids:
            excluded[reason] = ids
    feasible.sort(key=lambda item: (item[0], item[1], item[2]))
    chosen = feasible if max_candidates is None else feasible[:max_candidates]
    candidates = [
        Candidate.model_construct(
            rank=rank,
            offer_id=oid,
            provider=entry.offer.provider,
            region=entry.offer.region,
            zone=entry.offer.zone,
            instance_type=entry.offer.instance_type,
            capacity_class=entry.offer.capacity_class,
            gpu_name=entry.offer.gpu_name,
            gpu_count=entry.gpu_count,
            vcpus=entry.vcpus,
            memory_gib=entry.memory_gib,
            list_price_per_hour=entry.price + need_storage * entry.storage_price,
            storage_price_per_hour=need_storage * entry.storage_price,
            price_per_hour=price,
            total_cost=price * hours,
            failures=fails,
        )
        for rank, (_, fails, oid, price, entry) in enumerate(chosen)
    ]
    binding: ExclusionReason | None = None
    message: str | None = None
    if not feasible:
        binding = max(excluded, key=FUNNEL.index) if excluded else None
        message = _infeasible_message(binding, request, index, excluded, policy, usage)
    return Decision.model_construct(
        tenant_id=request.tenant_id,
        decided_at=now or datetime.now(UTC),
        duration_hours=hours,
        offers_considered=index.size,
        feasible_count=len(feasible),
        candidates=candidates,
        excluded=excluded,
        exclusion_details={reason: _detail(reason, request, policy, usage) for reason in excluded},
        binding_constraint=binding,
        message=message,
    )


def _money(value: float) -> str:
    return f"${value:,.4f}".rstrip("0").rstrip(".") if value < 1 else f"${value:,.2f}"


def _detail(reason: ExclusionReason, req: ComputeRequest, policy: TenantPolicy, usage: TenantUsage) -> str:
    res = req.resources
    gpu = res.gpu
    match reason:
        case ExclusionReason.GPU_TYPE:
            return f"not a {gpu.type} machine" if gpu else "has GPUs; the request is CPU-only"
        case ExclusionReason.GPU_COUNT:
            return f"fewer than {res.gpu_count} GPUs on one machine"
        case ExclusionReason.VCPUS:
            return f"fewer than {res.vcpus:g} vCPUs"
        case ExclusionReason.MEMORY:
            return f"less than {res.memory_gib:g} GiB memory"
        case ExclusionReason.STORAGE:
            return f"cannot attach {res.storage_gib:g} GiB storage"
        case ExclusionReason.PROVIDER:
            return f"provider not allowed (allowed: {req.providers or 'any'}, excluded: {req.exclude_providers})"
        case ExclusionReason.REGION:
            return f"region not allowed (allowed: {req.regions or 'any'}, excluded: {req.exclude_regions})"
        case ExclusionReason.SPOT:
            return "spot capacity and the request does not allow spot"
        case ExclusionReason.CAPACITY:
            return "no capacity available now"
        case ExclusionReason.PRICE_CAP:
            return f"effective price above max_price_per_hour {_money(req.max_price_per_hour or 0)}/h"
        case ExclusionReason.TENANT_PRICE_CAP:
            return f"effective price above the tenant's limit {_money(policy.max_price_per_hour or 0)}/h"
        case ExclusionReason.QUOTA:
            room = (policy.max_gpus or 0) - usage.gpus_in_use
            return f"more GPUs than the tenant's remaining quota ({room} of {policy.max_gpus})"
        case ExclusionReason.BUDGET:
            remaining = (policy.budget_usd or 0) - usage.spent_usd
            return f"total cost for {req.duration_hours:g} h above the remaining budget {_money(remaining)}"
    return reason.value  # pragma: no cover


def _infeasible_message(
    binding: ExclusionReason | None,
    req: ComputeRequest,
    index: OfferIndex,
    excluded: Mapping[ExclusionReason, list[str]],
    policy: TenantPolicy,
    usage: TenantUsage,
) -> str:
    if binding is None:
        return "no offers are loaded"
    ids = set(excluded[binding])
    reached = [e for e in index.groups.get(req.gpu_type_key, ()) if e.offer_id in ids]
    res = req.resources
    gpu = res.gpu
    what = f"{gpu.type} offer" if gpu else "CPU-only offer"
    prefix = f"{binding.value}: "
    if binding is ExclusionReason.GPU_TYPE:
        if gpu is None:
            return prefix + "no CPU-only offer exists"
        return prefix + f"no offer has GPU type {gpu.type!r}; known GPU types: {', '.join(index.gpu_types)}"
    if binding is ExclusionReason.GPU_COUNT:
        most_gpus = max(e.gpu_count for e in reached)
        return prefix + f"no {what} has {res.gpu_count} GPUs on one machine (the most is {most_gpus})"
    if binding is ExclusionReason.VCPUS:
        most_vcpus = max(e.vcpus for e in reached)
        return prefix + f"no {what} with the requested GPUs has {res.vcpus:g} vCPUs (the most is {most_vcpus:g})"
    if binding is ExclusionReason.MEMORY:
        most_mem = max(e.memory_gib for e in reached)
        return prefix + f"no {what} that fits the GPU/vCPU request has {res.memory_gib:g} GiB memory " \
            f"(the most is {most_mem:g} GiB)"
    if binding is ExclusionReason.STORAGE:
        most_storage = max(e.max_storage_gib or 0.0 for e in reached)
        return prefix + f"no matching {what} can attach {res.storage_gib:g} GiB (the most is {most_storage:g})"
    n = len(reached)
    if binding is ExclusionReason.PROVIDER:
        have = sorted({e.offer.provider for e in reached})
        return prefix + f"the {n} {what}s that fit the resources are from {', '.join(have)}; allowed " \
            f"providers: {req.providers or 'any'}, excluded: {req.exclude_providers}"
    if binding is ExclusionReason.REGION:
        have = sorted({e.offer.region for e in reached})
        return prefix + f"the {n} {what}s that fit are in {', '.join(have)}; allowed regions: " \
            f"{req.regions or 'any'}, excluded: {req.exclude_regions}"
    if binding is ExclusionReason.SPOT:
        return prefix + f"the {n} matching {what}s are spot capacity and spot_allowed is false"
    if binding is ExclusionReason.CAPACITY:
        return prefix + f"the {n} matching {what}s have no capacity available now"
    prices = [(e.price + res.storage_gib * e.storage_price) * policy.multiplier(e.provider) for e in reached]
    if binding is ExclusionReason.PRICE_CAP:
        return prefix + f"the cheapest matching {what} costs {_money(min(prices))}/h, above " \
            f"max_price_per_hour {_money(req.max_price_per_hour or 0)}/h"
    if binding is ExclusionReason.TENANT_PRICE_CAP:
        return prefix + f"the cheapest matching {what} costs {_money(min(prices))}/h, above the tenant's " \
            f"limit of {_money(policy.max_price_per_hour or 0)}/h"
    if binding is ExclusionReason.QUOTA:
        room = (policy.max_gpus or 0) - usage.gpus_in_use
        fewest = min(e.gpu_count for e in reached)
        return prefix + f"the tenant may add {max(room, 0)} GPU(s) (quota {policy.max_gpus}, in use " \
            f"{usage.gpus_in_use}); the smallest matching {what} has {fewest}"
    remaining = (policy.budget_usd or 0) - usage.spent_usd
    return prefix + f"the cheapest matching {what} costs {_money(min(prices) * req.duration_hours)} for " \
        f"{req.duration_hours:g} h, above the remaining budget {_money(remaining)}"


def choose_or_raise(
    request: ComputeRequest, offers: OfferIndex | OfferBook | Sequence[Offer], **kwargs: Any
) -> Decision:
    """:func:`choose`, raising :class:`NoFeasibleOffer` (-> HTTP 422) when nothing is feasible."""
    return choose(request, offers, **kwargs).raise_if_infeasible()
