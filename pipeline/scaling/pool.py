"""The fair-share pool: weighted DRF over the latest demand of every workload, and the grants it sends back.

The one-partition ``scaling-demands`` agent calls :func:`pool_grants` with each demand the engines send
(:class:`~pipeline.scaling.records.Demand`); each changed grant goes back to its workload's engine
(:meth:`pipeline.scaling.engine.ScalingEngine.on_grant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.scaling import metrics
from pipeline.scaling.fairshare import (
    RESOURCES,
    FairShareResult,
    ResourceVector,
    TenantAllocation,
    TenantDemand,
    drf_allocate,
)
from pipeline.scaling.records import Demand, Grant, split_key
from pipeline.typed_table import TypedTable
from pipeline.usage import workload_key

#: Capacity of a pool resource that is not configured (no limit).
UNLIMITED = 1e12


@dataclass(frozen=True)
class PoolAllocation:
    result: FairShareResult | None
    allocations: dict[str, TenantAllocation]
    expired: list[str]


def allocate_pool(
    pool: ResourceVector, demands: dict[str, Demand], now: datetime, ttl_seconds: float
) -> PoolAllocation:
    """Weighted DRF over the latest demand of every workload (keyed ``tenant/workload``).

    Demands not refreshed within ``ttl_seconds`` (wall clock) leave the pool. Each tenant's tier weight is
    split evenly over its workloads in the pool, so a tenant's share does not grow with its number of
    workloads; the tenant's quota caps the sum over its workloads. A workload needing a resource the pool
    has none of gets nothing (``limited_by="capacity"``).
    """
    cutoff = now - timedelta(seconds=ttl_seconds)
    live = {k: d for k, d in demands.items() if d.sent_at >= cutoff}
    expired = sorted(k for k in demands if k not in live)
    per_tenant: dict[str, int] = {}
    for demand in live.values():
        per_tenant[demand.tenant_id] = per_tenant.get(demand.tenant_id, 0) + 1
    capacity = pool.as_tuple()
    allocations: dict[str, TenantAllocation] = {}
    entries: list[TenantDemand] = []
    quotas: dict[str, ResourceVector] = {}
    for key, demand in sorted(live.items()):
        weight = demand.weight / per_tenant[demand.tenant_id]
        needs = demand.per_replica.as_tuple()
        impossible = [RESOURCES[i] for i in range(len(RESOURCES)) if needs[i] > 0 and capacity[i] <= 0]
        if impossible or all(v <= 0 for v in needs):
            allocations[key] = TenantAllocation(
                tenant_id=key, requested=demand.replicas, granted=0 if impossible else demand.replicas,
                resources=ResourceVector(), dominant_resource=None, dominant_share=0.0, weighted_share=0.0,
                weight=weight, limited_by="capacity" if impossible else "demand",
            )
            continue
        if demand.quota is not None:
            quotas[demand.tenant_id] = demand.quota
        entries.append(TenantDemand(tenant_id=key, per_replica=demand.per_replica, replicas=demand.replicas,
                                    weight=weight, group=demand.tenant_id))
    result = drf_allocate(pool, entries, quotas) if entries else None
    if result is not None:
        for allocation in result.allocations:
            allocations[allocation.tenant_id] = allocation
    return PoolAllocation(result=result, allocations=allocations, expired=expired)


def pool_grants(
    pool: ResourceVector, demands: TypedTable[Demand], incoming: Demand, now: datetime, ttl_seconds: float
) -> list[Grant]:
    """Store ``incoming``, re-run DRF, and return the grants that changed (and always the incoming one's).

    A demand older than the one held for its workload (it was overtaken on the way) is dropped.
    """
    incoming_key = workload_key(incoming.tenant_id, incoming.workload)
    previous = demands.get(incoming_key)
    if previous is not None and incoming.sent_at < previous.sent_at:
        return []
    if previous is not None:
        incoming = incoming.model_copy(update={"last_granted": previous.last_granted,
                                               "last_limited_by": previous.last_limited_by})
    demands.put(incoming_key, incoming)
    current = dict(demands.items())
    allocation = allocate_pool(pool, current, now, ttl_seconds)
    for key in allocation.expired:
        demands.delete(key)
    result = allocation.result
    contended = result.contended if result is not None else False
    used = result.used if result is not None else ResourceVector()
    grants: list[Grant] = []
    for key, alloc in sorted(allocation.allocations.items()):
        demand = current[key]
        if key != incoming_key and demand.last_granted == alloc.granted and demand.last_limited_by == alloc.limited_by:
            continue
        demands.put(key, demand.model_copy(update={"last_granted": alloc.granted, "last_limited_by": alloc.limited_by}))
        tenant_id, workload = split_key(key)
        grants.append(Grant(tenant_id=tenant_id, workload=workload, allocation=alloc, contended=contended,
                            capacity=pool, used=used, computed_at=now, demand_seq=demand.seq))
    metrics.GRANTS.inc(len(grants))
    return grants
