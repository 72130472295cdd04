"""Weighted Dominant Resource Fairness (Ghodsi et al., NSDI 2011) over cpu, memory and gpu.

Each tenant asks for ``tasks`` replicas of a per-replica demand vector. Progressive filling: repeatedly
give one replica to the tenant with the smallest *weighted dominant share* (its largest share of any
resource divided by its tier weight) among those that still want one, whose next replica fits in what
is left and stays within its quota cap. A tenant whose next replica does not fit is frozen (it keeps
what it has; the others go on). When the sum of demands fits, everybody gets what they asked for.

The result is deterministic: ties go to the tenant with the smaller dominant share, then the smaller
tenant id. Everything is plain data so the allocation can be stored with each decision.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

RESOURCES: tuple[str, ...] = ("cpu", "memory", "gpu")
_EPS = 1e-9


class ResourceVector(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cpu: float = Field(0.0, ge=0.0)
    memory: float = Field(0.0, ge=0.0)
    """Any unit, as long as demand, capacity and quota agree (GiB suggested)."""
    gpu: float = Field(0.0, ge=0.0)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.cpu, self.memory, self.gpu)

    @classmethod
    def from_tuple(cls, values: Sequence[float]) -> ResourceVector:
        return cls(cpu=values[0], memory=values[1], gpu=values[2])


class TenantDemand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tenant_id: str = Field(min_length=1)
    per_replica: ResourceVector
    """Resources of one replica (task)."""
    replicas: int = Field(ge=0)
    """Replicas the tenant wants (its desired capacity)."""
    weight: float = Field(1.0, gt=0.0)
    """Tier weight: a weight-2 tenant gets twice the dominant share of a weight-1 tenant."""
    quota: ResourceVector | None = None
    """Cap on the tenant's total resources (its quota), if any."""
    max_replicas: int | None = Field(None, ge=0)
    group: str | None = None
    """Demands of one group (e.g. the workloads of one tenant) share the group's quota in ``group_quotas``."""

    @model_validator(mode="after")
    def _check_demand(self) -> TenantDemand:
        if self.replicas > 0 and all(v <= 0 for v in self.per_replica.as_tuple()):
            raise ValueError("a replica must need some resource")
        return self


class TenantAllocation(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    tenant_id: str
    requested: int
    granted: int
    resources: ResourceVector
    dominant_resource: str | None
    dominant_share: float
    weighted_share: float
    weight: float
    limited_by: str
    """``demand`` (got everything asked for), ``quota``, ``capacity`` (its next replica did not fit)."""


class FairShareResult(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    capacity: ResourceVector
    used: ResourceVector
    contended: bool
    """True when the sum of demands did not fit (someone got less than asked)."""
    allocations: list[TenantAllocation]

    def grant(self, tenant_id: str) -> TenantAllocation:
        for alloc in self.allocations:
            if alloc.tenant_id == tenant_id:
                return alloc
        raise KeyError(tenant_id)

    def granted(self) -> dict[str, int]:
        return {a.tenant_id: a.granted for a in self.allocations}


def _dominant(vec: Sequence[float], capacity: Sequence[float]) -> tuple[float, str | None]:
    best, name = 0.0, None
    for i, resource in enumerate(RESOURCES):
        if capacity[i] > 0:
            share = vec[i] / capacity[i]
            if share > best + _EPS or (name is None and share > 0):
                best, name = share, resource
    return best, name


def _fits(used: Sequence[float], add: Sequence[float], limit: Sequence[float]) -> bool:
    return all(used[i] + add[i] <= limit[i] + _EPS for i in range(len(RESOURCES)))


def drf_allocate(
    capacity: ResourceVector,
    demands: Sequence[TenantDemand],
    group_quotas: Mapping[str, ResourceVector] | None = None,
) -> FairShareResult:
    """Weighted DRF allocation of whole replicas by progressive filling.

    ``group_quotas`` caps the sum of the allocations of the demands of each group (a tenant's quota over
    all its workloads), on top of each demand's own ``quota``.
    """
    cap = capacity.as_tuple()
    ids = [d.tenant_id for d in demands]
    if len(set(ids)) != len(ids):
        raise ValueError("tenant ids must be unique")
    for d in demands:
        for i, resource in enumerate(RESOURCES):
            if d.per_replica.as_tuple()[i] > 0 and cap[i] <= 0 and d.replicas > 0:
                raise ValueError(f"tenant {d.tenant_id} needs {resource}, which has no capacity")
    used = [0.0, 0.0, 0.0]
    given = {d.tenant_id: 0 for d in demands}
    alloc: dict[str, list[float]] = {d.tenant_id: [0.0, 0.0, 0.0] for d in demands}
    limited: dict[str, str] = {d.tenant_id: "demand" for d in demands}
    by_id = {d.tenant_id: d for d in demands}
    groups = dict(group_quotas or {})
    group_used: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in groups}

    def wanted(d: TenantDemand) -> int:
        return d.replicas if d.max_replicas is None else min(d.replicas, d.max_replicas)

    heap: list[tuple[float, float, str]] = []
    for d in demands:
        if wanted(d) > 0:
            heapq.heappush(heap, (0.0, 0.0, d.tenant_id))
        elif d.max_replicas is not None and d.replicas > d.max_replicas:
            limited[d.tenant_id] = "quota"
    while heap:
        _, _, tid = heapq.heappop(heap)
        d = by_id[tid]
        need = d.per_replica.as_tuple()
        mine = alloc[tid]
        if d.quota is not None and not _fits(mine, need, d.quota.as_tuple()):
            limited[tid] = "quota"
            continue
        group = group_used.get(d.group) if d.group is not None else None
        if group is not None and not _fits(group, need, groups[str(d.group)].as_tuple()):
            limited[tid] = "quota"
            continue
        if not _fits(used, need, cap):
            limited[tid] = "capacity"
            continue
        for i in range(len(RESOURCES)):
            used[i] += need[i]
            mine[i] += need[i]
            if group is not None:
                group[i] += need[i]
        given[tid] += 1
        if given[tid] >= wanted(d):
            if d.max_replicas is not None and d.replicas > d.max_replicas:
                limited[tid] = "quota"
            continue
        next_share = _dominant(mine, cap)[0]
        heapq.heappush(heap, (next_share / d.weight, next_share, tid))
    allocations: list[TenantAllocation] = []
    for d in demands:
        share, dominant = _dominant(alloc[d.tenant_id], cap)
        allocations.append(
            TenantAllocation(
                tenant_id=d.tenant_id,
                requested=d.replicas,
                granted=given[d.tenant_id],
                resources=ResourceVector.from_tuple([_clean(v) for v in alloc[d.tenant_id]]),
                dominant_resource=dominant,
                dominant_share=_clean(share),
                weighted_share=_clean(share / d.weight),
                weight=d.weight,
                limited_by=limited[d.tenant_id],
            )
        )
    return FairShareResult(
        capacity=capacity,
        used=ResourceVector.from_tuple([_clean(v) for v in used]),
        contended=any(a.granted < a.requested for a in allocations),
        allocations=allocations,
    )


def _clean(value: float) -> float:
    rounded = round(value, 9)
    return 0.0 if math.isclose(rounded, 0.0, abs_tol=_EPS) else rounded


def tasks_usable(granted: ResourceVector, true_per_replica: ResourceVector) -> int:
    """Replicas of the *true* demand vector that fit in a granted bundle (strategy-proofness checks)."""
    g = granted.as_tuple()
    need = true_per_replica.as_tuple()
    counts = [math.floor(g[i] / need[i] + _EPS) for i in range(len(RESOURCES)) if need[i] > 0]
    return min(counts) if counts else 0


def tier_weights(tiers: Mapping[str, str], weights_by_tier: Mapping[str, float]) -> dict[str, float]:
    """Weight per tenant from its tier name (unknown tiers weigh 1)."""
    return {tenant: float(weights_by_tier.get(tier, 1.0)) for tenant, tier in tiers.items()}
