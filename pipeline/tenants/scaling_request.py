"""Scaling requests from the platform: validated against the tenant's quota, then a scaling command."""

from __future__ import annotations

import math
from datetime import datetime

from pipeline.contract.records import ScalingCommand
from pipeline.contract.topics import SCALING_EVENTS
from pipeline.events.models import QuotaResource, ScalingRequest
from pipeline.outputs import Emit, derived_id
from pipeline.tenants.logic import TenantStores, refusal_for, require_tenant
from pipeline.tenants.models import quota_limit
from pipeline.typed_table import TypedTable
from pipeline.usage import UsageRecord


def handle_scaling_request(
    event: ScalingRequest, stores: TenantStores, usage: TypedTable[UsageRecord], now: datetime
) -> list[Emit]:
    """Accept the request if the resulting replicas fit the quota; otherwise refuse it with the reason."""
    require_tenant(stores, event.tenant_id)
    quota = stores.quotas.get(event.tenant_id)
    assert quota is not None
    sample = (usage.get(event.tenant_id) or UsageRecord(tenant_id=event.tenant_id)).workloads.get(event.workload)
    current = sample.replicas if sample and sample.replicas is not None else None
    target = event.desired_replicas
    if target is None and current is not None and event.delta is not None:
        target = max(0, current + event.delta)
    scaling_up = (event.delta or 0) > 0 or (target is not None and current is not None and target > current)
    refusal = refusal_for(quota, "kubernetes") if scaling_up else None
    if scaling_up and refusal is None and sample is not None and target is not None and sample.replicas:
        per_replica = {
            QuotaResource.CPU_CORES: sample.cpu_cores / sample.replicas,
            QuotaResource.MEMORY_GIB: sample.memory_gib / sample.replicas,
            QuotaResource.GPUS: sample.gpus / sample.replicas,
        }
        for resource, each in per_replica.items():
            need = each * target
            limit = quota_limit(quota.limits, resource)
            if each > 0 and need > limit + 1e-9:
                allowed = math.floor(limit / each)
                refusal = (
                    f"{target} replicas of {event.workload} would need {need:g} {resource.value} but the "
                    f"quota is {limit:g} (at most {allowed} replicas fit)"
                )
                break
    return [
        Emit(
            SCALING_EVENTS,
            event.tenant_id,
            ScalingCommand(
                command_id=derived_id(event.event_id, "scale"),
                tenant_id=event.tenant_id,
                workload=event.workload,
                desired_replicas=event.desired_replicas,
                delta=event.delta,
                reason=event.reason,
                status="refused" if refusal else "accepted",
                refusal=refusal,
                issued_at=now,
                cause_event_id=event.event_id,
            ),
        )
    ]
