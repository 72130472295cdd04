"""Quota admission of compute requests: whether a tenant may ask for one more machine.

One rule (docs/compute.md, "Quota admission"), decided by :func:`admit` and nothing else:

* the tenant has a quota record (none: refused, fail closed) and no over-quota mark (set by
  ``quota-exceeded-events``; any marked resource refuses new compute until it is cleared);
* for every resource (GPUs, vCPUs, memory, storage): what the tenant's live requests hold (every
  request not finished: ``requested`` ones including reservations for later, ``allocating``,
  ``provisioning``, ``running`` and ``terminating``) plus what the new request asks for stays within
  the quota.

A live request counts what it asked for (the machine chosen may be larger; the optimizer keeps the
machine's GPUs within the GPU quota). GPUs count the larger of the request's and the machine's.
Amounts are compared in integer thousandths, so sums are exact and the check has no rounding slack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.request import ComputeRequest
from pipeline.events.models import QuotaResource
from pipeline.tenants.models import QuotaRecord, quota_limit

#: The resources checked, in the order a refusal names them.
RESOURCES: tuple[QuotaResource, ...] = (
    QuotaResource.GPUS, QuotaResource.CPU_CORES, QuotaResource.MEMORY_GIB, QuotaResource.STORAGE_GIB,
)
_UNITS = {
    QuotaResource.GPUS: "GPU(s)", QuotaResource.CPU_CORES: "vCPU(s)",
    QuotaResource.MEMORY_GIB: "GiB of memory", QuotaResource.STORAGE_GIB: "GiB of storage",
}
_SCALE = 1000

RefusalCode = Literal["quota-exceeded", "over-quota", "no-quota", "quarantined"]


def _milli(value: float) -> int:
    return round(value * _SCALE)


def _amount(milli: int) -> float:
    return milli / _SCALE


def requested(request: ComputeRequest) -> dict[QuotaResource, int]:
    """What one request asks for, in thousandths of each resource's unit."""
    resources = request.resources
    return {
        QuotaResource.GPUS: _milli(resources.gpu_count),
        QuotaResource.CPU_CORES: _milli(resources.vcpus),
        QuotaResource.MEMORY_GIB: _milli(resources.memory_gib),
        QuotaResource.STORAGE_GIB: _milli(resources.storage_gib),
    }


def held(record: ComputeRecord) -> dict[QuotaResource, int]:
    """What a record counts against its tenant's quota (nothing once finished)."""
    if record.terminal:
        return dict.fromkeys(RESOURCES, 0)
    amounts = requested(record.request)
    amounts[QuotaResource.GPUS] = max(amounts[QuotaResource.GPUS], _milli(record.gpus_held))
    return amounts


def in_use(records: Iterable[ComputeRecord], tenant_id: str) -> dict[QuotaResource, int]:
    """The sum of :func:`held` over the tenant's records, in thousandths."""
    total = dict.fromkeys(RESOURCES, 0)
    for record in records:
        if record.tenant_id != tenant_id:
            continue
        for resource, amount in held(record).items():
            total[resource] += amount
    return total


@dataclass(frozen=True)
class Excess:
    """One resource the request would take the tenant over."""

    resource: QuotaResource
    requested: float
    in_use: float
    limit: float

    def describe(self) -> str:
        return (f"{self.resource.value}: requested {self.requested:g} {_UNITS[self.resource]}, "
                f"{self.in_use:g} in use of a quota of {self.limit:g}")


@dataclass(frozen=True)
class QuotaRefusal:
    """Why a compute request is not admitted; ``excess`` lists every resource it would exceed."""

    code: RefusalCode
    tenant_id: str
    message: str
    excess: tuple[Excess, ...] = ()
    marked: tuple[QuotaResource, ...] = ()

    @property
    def resource(self) -> QuotaResource | None:
        """The first resource named (an exceeded one, else a marked one)."""
        if self.excess:
            return self.excess[0].resource
        return self.marked[0] if self.marked else None

    def details(self) -> dict[str, object]:
        """JSON details for the REST error and the dead letter."""
        first = self.excess[0] if self.excess else None
        return {
            "tenant_id": self.tenant_id,
            "resource": self.resource.value if self.resource else None,
            "requested": first.requested if first else None,
            "in_use": first.in_use if first else None,
            "limit": first.limit if first else None,
            "exceeded": [
                {"resource": e.resource.value, "requested": e.requested, "in_use": e.in_use, "limit": e.limit}
                for e in self.excess
            ],
            "over_quota": [r.value for r in self.marked],
        }


class ComputeQuotaRefused(Exception):
    """A compute request refused by :func:`admit` (REST: 422 ``quota-exceeded``; events: dead letter)."""

    def __init__(self, refusal: QuotaRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def admit(
    request: ComputeRequest, records: Iterable[ComputeRecord], quota: QuotaRecord | None,
    quarantined: Sequence[str] = (),
) -> QuotaRefusal | None:
    """``None`` when the tenant may have ``request`` on top of its live ``records``, else why not (pure).

    ``quarantined``: the tenant's workloads a critical anomaly quarantined. A compute request names no
    workload, so while any is quarantined the tenant gets no new compute (a platform admin releases them).
    """
    tenant_id = request.tenant_id
    if quarantined:
        names = ", ".join(sorted(quarantined)[:5])
        return QuotaRefusal(
            "quarantined", tenant_id,
            f"tenant has quarantined workloads ({names}); new compute is refused until a platform admin releases "
            f"them (DELETE /api/v1/tenants/{tenant_id}/quarantine/<resource_id>)",
        )
    if quota is None:
        return QuotaRefusal("no-quota", tenant_id, f"tenant {tenant_id!r} has no quota record; compute is refused")
    if quota.over_quota:
        marked = tuple(r for r in RESOURCES if r in quota.over_quota)
        first = quota.over_quota[marked[0]]
        return QuotaRefusal(
            "over-quota", tenant_id,
            f"tenant is over its {marked[0].value} quota (used {first.used:g} of {first.limit:g} since "
            f"{first.since.isoformat()}); new compute is refused until it is back under quota or the quota is raised",
            marked=marked,
        )
    using = in_use(records, tenant_id)
    asked = requested(request)
    excess = tuple(
        Excess(resource, _amount(asked[resource]), _amount(using[resource]), quota_limit(quota.limits, resource))
        for resource in RESOURCES
        if asked[resource] > 0 and using[resource] + asked[resource] > _milli(quota_limit(quota.limits, resource))
    )
    if not excess:
        return None
    return QuotaRefusal(
        "quota-exceeded", tenant_id,
        "the request exceeds the tenant's quota: " + "; ".join(e.describe() for e in excess), excess=excess,
    )
