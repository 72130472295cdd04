"""Over-quota marks lifted by the tenant's own usage: only samples after the mark count, storage never."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agents.resource_metrics import MetricsBatches
from pipeline.events.models import QuotaResource, Tier
from pipeline.outputs import Emit
from pipeline.tenants.models import OverQuota, QuotaRecord
from pipeline.tenants.quota_marks import lift_marks, lifted_by_admin, lifted_by_usage, without_marks
from pipeline.tenants.tiers import quota_for_tier
from pipeline.typed_table import TypedTable
from pipeline.usage import UsageRecord, WorkloadSample
from tests.pipeline.tenants.conftest import NOW

LIMITS = quota_for_tier(Tier.STANDARD)


def marked(*resources: QuotaResource, since: datetime = NOW) -> QuotaRecord:
    return QuotaRecord(
        tenant_id="acme", limits=LIMITS, updated_at=NOW, updated_by="test",
        over_quota={r: OverQuota(used=1e6, limit=1, since=since, event_id=f"mark-{r.value}") for r in resources},
    )


def usage(**workloads: tuple[float, float]) -> UsageRecord:
    """workload -> (cpu cores, seconds after NOW of its latest sample)."""
    return UsageRecord(tenant_id="acme", workloads={
        name: WorkloadSample(cpu_cores=cpu, memory_gib=1.0, gpus=0.0, at=NOW + timedelta(seconds=offset))
        for name, (cpu, offset) in workloads.items()
    })


def test_a_sample_after_the_mark_below_the_limit_lifts_it_once() -> None:
    quota = marked(QuotaResource.CPU_CORES)
    lifted, emits = lift_marks(quota, usage(api=(LIMITS.cpu_cores / 2, 10)), NOW + timedelta(minutes=1))
    assert lifted == {QuotaResource.CPU_CORES: "mark-cpu_cores"}
    (event,) = [e.value for e in emits]
    assert (event.kind, event.resource, event.status, event.detail["used"]) == (
        "quota-enforcement", "cpu_cores", "under-quota", LIMITS.cpu_cores / 2)
    changed = without_marks(quota, lifted, NOW)
    assert changed is not None and changed.over_quota == {}
    assert quota.over_quota  # the record read is not changed in place
    # the same mark's lift has the same event id (a crash between send and write sends it again, deduped)
    assert lift_marks(quota, usage(api=(0.1, 20)), NOW)[1][0].value.event_id == event.event_id


def test_samples_from_before_the_mark_or_none_at_all_keep_it() -> None:
    quota = marked(QuotaResource.CPU_CORES)
    assert lifted_by_usage(quota, usage(api=(0.0, -5))) == {}  # the usage that set the mark
    assert lifted_by_usage(quota, usage()) == {}


def test_storage_is_never_lifted_by_samples() -> None:
    quota = marked(QuotaResource.STORAGE_GIB, QuotaResource.GPUS)
    assert set(lifted_by_usage(quota, usage(api=(0.0, 5)))) == {QuotaResource.GPUS}


def test_a_mark_set_again_meanwhile_stays() -> None:
    quota = marked(QuotaResource.CPU_CORES)
    lifted, _ = lift_marks(quota, usage(api=(0.0, 5)), NOW)
    again = marked(QuotaResource.CPU_CORES)
    again.over_quota[QuotaResource.CPU_CORES].event_id = "a-newer-mark"
    assert without_marks(again, lifted, NOW) is None


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                    st.tuples(st.floats(0, 500, allow_nan=False), st.floats(-100, 100, allow_nan=False)),
                    max_size=4),
)
def test_lifted_exactly_when_the_workloads_reporting_since_the_mark_are_within_the_limit(
    workloads: dict[str, tuple[float, float]],
) -> None:
    recent = [cpu for cpu, offset in workloads.values() if offset > 0]
    expected = bool(recent) and sum(recent) <= LIMITS.cpu_cores
    lifted = lifted_by_usage(marked(QuotaResource.CPU_CORES), usage(**workloads))
    assert (QuotaResource.CPU_CORES in lifted) is expected


async def test_the_agent_announces_before_it_writes_and_keeps_a_mark_set_during_the_wait() -> None:
    quotas: TypedTable[QuotaRecord] = TypedTable({}, QuotaRecord)
    quotas.put("acme", marked(QuotaResource.CPU_CORES, QuotaResource.GPUS))
    order: list[str] = []

    async def emit_all(emits: list[Emit]) -> None:
        order.append(f"sent {len(emits)}, marks then: {sorted(r.value for r in quotas.get('acme').over_quota)}")  # type: ignore[union-attr]
        remarked = quotas.get("acme")
        assert remarked is not None
        remarked.over_quota[QuotaResource.GPUS].event_id = "gpus-marked-again"  # another agent, meanwhile
        quotas.put("acme", remarked)

    batches: Any = MetricsBatches.__new__(MetricsBatches)
    batches.io = SimpleNamespace(emit_all=emit_all)
    batches.stores = SimpleNamespace(quotas=quotas)
    await batches.lift_quota_marks(usage(api=(0.0, 5)))

    assert order == ["sent 2, marks then: ['cpu_cores', 'gpus']"]
    final = quotas.get("acme")
    assert final is not None and list(final.over_quota) == [QuotaResource.GPUS]


def test_an_admin_lift_drops_only_the_named_marks_and_announces_each_once() -> None:
    quota = marked(QuotaResource.CPU_CORES, QuotaResource.STORAGE_GIB)
    later = NOW + timedelta(minutes=5)
    record, emits = lifted_by_admin(quota, [QuotaResource.STORAGE_GIB, QuotaResource.STORAGE_GIB], "root", later)
    assert record is not None and list(record.over_quota) == [QuotaResource.CPU_CORES]
    assert record.limits == quota.limits and record.updated_at == later
    assert list(quota.over_quota) == [QuotaResource.CPU_CORES, QuotaResource.STORAGE_GIB]  # the input is kept
    [emit] = emits
    event = emit.value
    assert event.kind == "quota-enforcement" and event.status == "under-quota"
    assert event.previous_status == "over-quota" and event.resource == "storage_gib"
    assert event.detail["lifted_by"] == "admin" and event.detail["actor"] == "root"
    assert event.event_id == lifted_by_admin(quota, [QuotaResource.STORAGE_GIB], "other", NOW)[1][0].value.event_id
    # a mark not there (a redelivered lift, or lifted meanwhile) changes nothing and says nothing
    assert lifted_by_admin(record, [QuotaResource.STORAGE_GIB, QuotaResource.GPUS], "root", later) == (None, [])
