"""Over-quota marks that the tenant's own usage lifts.

A ``quota-exceeded`` event marks a resource over quota (``handle_quota_exceeded``): new provisioning of the
backends it gates and new compute are refused until the mark goes. A raised quota clears it
(``set_quota``); so does usage that falls back to the limit or under it, decided here from the samples the worker
receives on ``resource-metrics``.

Only workloads that reported after the mark was set count: a sample from before it is the usage that set it,
and a workload that stopped reporting (scaled to zero, deleted) would otherwise hold the tenant over quota
for ever. At least one such sample must exist, so a tenant whose workloads report nothing keeps its mark
(the platform's quota monitor, a raised quota, or an admin lift it then). The storage mark is never lifted
here: samples carry no storage.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.contract.topics import PROVISIONING_EVENTS
from pipeline.events.models import ProvisioningStatusEvent, QuotaResource
from pipeline.outputs import Emit, derived_id
from pipeline.tenants.models import OverQuota, QuotaRecord, quota_limit
from pipeline.usage import UsageRecord

#: The marks that samples can lift, and the sample field each one reads.
SAMPLED: dict[QuotaResource, str] = {
    QuotaResource.CPU_CORES: "cpu_cores",
    QuotaResource.MEMORY_GIB: "memory_gib",
    QuotaResource.GPUS: "gpus",
}


def usage_since(usage: UsageRecord, resource: QuotaResource, since: datetime) -> float | None:
    """The tenant's use of ``resource`` over the workloads that reported after ``since`` (None: none did)."""
    field = SAMPLED[resource]
    recent = [sample for sample in usage.workloads.values() if sample.at > since]
    if not recent:
        return None
    return float(sum(getattr(sample, field) for sample in recent))


def lifted_by_usage(quota: QuotaRecord, usage: UsageRecord) -> dict[QuotaResource, float]:
    """The marked resources whose use since their mark is within the current limit (at or under it: a mark
    means "used more than the limit"), with that use (pure)."""
    lifted = {}
    for resource, mark in quota.over_quota.items():
        if resource not in SAMPLED:
            continue
        used = usage_since(usage, resource, mark.since)
        if used is not None and used <= quota_limit(quota.limits, resource):
            lifted[resource] = used
    return lifted


def _lift_announcement(
    tenant_id: str, resource: QuotaResource, mark: OverQuota, how: str, now: datetime, detail: dict[str, object],
) -> Emit:
    """The ``quota-enforcement``/``under-quota`` event of one lifted mark; its id derives from the mark and
    ``how`` it was lifted, so announcing the same lift again repeats the id."""
    return Emit(PROVISIONING_EVENTS, tenant_id, ProvisioningStatusEvent(
        event_id=derived_id(mark.event_id, how),
        tenant_id=tenant_id,
        occurred_at=now,
        kind="quota-enforcement",
        resource=resource.value,
        status="under-quota",
        previous_status="over-quota",
        detail={**detail, "marked_since": mark.since.isoformat()},
    ))


def lift_marks(
    quota: QuotaRecord | None, usage: UsageRecord, now: datetime,
) -> tuple[dict[QuotaResource, str], list[Emit]]:
    """The marks the tenant's usage lifts (resource -> the event id of its mark) and the event announcing each
    lift on ``provisioning-events``; nothing is written (:func:`without_marks` makes the new record).

    The caller sends the events before it writes the record: a crash in between sends them again with the
    same ids (derived from the mark's event) at the next fresh sample, while a record written first could
    leave a lift nobody heard of.
    """
    if quota is None or not quota.over_quota:
        return {}, []
    lifted: dict[QuotaResource, str] = {}
    emits = []
    for resource, used in lifted_by_usage(quota, usage).items():
        mark = quota.over_quota[resource]
        lifted[resource] = mark.event_id
        emits.append(_lift_announcement(usage.tenant_id, resource, mark, "lifted", now, {
            "used": used, "limit": quota_limit(quota.limits, resource), "lifted_by": "usage"}))
    return lifted, emits


def without_marks(quota: QuotaRecord, lifted: dict[QuotaResource, str], now: datetime) -> QuotaRecord | None:
    """``quota`` without the lifted marks that are still the ones lifted (a newer quota-exceeded event that
    marked the resource again meanwhile stays); None when nothing changes."""
    gone = [r for r, event_id in lifted.items() if r in quota.over_quota and quota.over_quota[r].event_id == event_id]
    if not gone:
        return None
    changed = quota.model_copy(deep=True)
    for resource in gone:
        del changed.over_quota[resource]
    changed.updated_at = now
    return changed


def lifted_by_admin(
    quota: QuotaRecord, resources: list[QuotaResource], actor: str, now: datetime,
) -> tuple[QuotaRecord | None, list[Emit]]:
    """A platform admin lifts the marks of ``resources`` (pure): the record without them (None when none of
    them is marked: a redelivered or raced lift changes nothing) and the event announcing each lift on
    ``provisioning-events``. The quota itself stays: the tenant may be marked again by the next
    quota-exceeded event."""
    marked = [r for r in dict.fromkeys(resources) if r in quota.over_quota]
    if not marked:
        return None, []
    changed = quota.model_copy(deep=True)
    emits = []
    for resource in marked:
        mark = changed.over_quota.pop(resource)
        # Derived from the mark: lifting the same mark again (a redelivery) announces it once.
        emits.append(_lift_announcement(quota.tenant_id, resource, mark, "lifted-by-admin", now, {
            "used": mark.used, "limit": quota_limit(quota.limits, resource), "lifted_by": "admin",
            "actor": actor}))
    changed.updated_at = now
    return changed, emits
