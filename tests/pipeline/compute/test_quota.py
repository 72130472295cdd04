"""Quota admission (pipeline.compute.quota.admit): every resource, live requests and reservations, marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.compute.lifecycle import ComputeRecord, ComputeState, transition
from pipeline.compute.quota import RESOURCES, admit, in_use
from pipeline.compute.request import ComputeRequest
from pipeline.events.models import QuotaResource
from pipeline.provisioners.tiers import Quota, load_tiers
from pipeline.tenants.models import OverQuota, QuotaRecord, quota_limit

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def request(tenant: str = "acme", vcpus: float = 0, memory_gib: float = 0, storage_gib: float = 0,
            gpus: int = 0, **kw: Any) -> ComputeRequest:
    resources: dict[str, Any] = {"vcpus": vcpus, "memory_gib": memory_gib, "storage_gib": storage_gib}
    if gpus:
        resources["gpu"] = {"type": "H100", "count": gpus}
    return ComputeRequest.model_validate({"tenant_id": tenant, "resources": resources, "duration_hours": 1, **kw})


def quota(limits: Quota, tenant: str = "acme") -> QuotaRecord:
    return QuotaRecord(tenant_id=tenant, limits=limits, updated_at=T0, updated_by="test")


def record(req: ComputeRequest, name: str, state: ComputeState = ComputeState.REQUESTED) -> ComputeRecord:
    rec = ComputeRecord.new(f"{req.tenant_id}.{name}", req, T0)
    path = {
        ComputeState.REQUESTED: [],
        ComputeState.ALLOCATING: [ComputeState.ALLOCATING],
        ComputeState.FAILED: [ComputeState.FAILED],
        ComputeState.TERMINATED: [ComputeState.TERMINATED],
    }[state]
    for target in path:
        rec = transition(rec, target, T0)
    return rec


FREE = load_tiers(None).tier("free").quota  # the packaged tiers file: 2 cores, 4 GiB


def test_a_free_tenant_asking_for_64_vcpus_and_256_gib_is_refused() -> None:
    refusal = admit(request(vcpus=64, memory_gib=256), [], quota(FREE))
    assert refusal is not None and refusal.code == "quota-exceeded"
    assert refusal.resource is QuotaResource.CPU_CORES
    first, second = refusal.excess
    assert (first.requested, first.in_use, first.limit) == (64, 0, FREE.cpu_cores)
    assert (second.resource, second.requested, second.limit) == (QuotaResource.MEMORY_GIB, 256, FREE.memory_gib)
    assert refusal.details()["exceeded"][1]["resource"] == "memory_gib"


def test_within_the_quota_is_admitted_up_to_the_limit_exactly() -> None:
    assert admit(request(vcpus=2, memory_gib=4, storage_gib=10), [], quota(FREE)) is None
    held = [record(request(vcpus=0.5, memory_gib=1), "a")]
    assert admit(request(vcpus=1.5, memory_gib=3), held, quota(FREE)) is None
    refusal = admit(request(vcpus=1.501), held, quota(FREE))
    assert refusal is not None and refusal.excess[0].in_use == 0.5


def test_every_unfinished_request_counts_and_finished_ones_do_not() -> None:
    limits = Quota(cpu_cores=8, memory_gib=32, gpus=4, storage_gib=100)
    tomorrow = T0 + timedelta(days=1)
    live = [
        record(request(gpus=2, vcpus=2), "allocating", ComputeState.ALLOCATING),
        record(request(gpus=2, vcpus=2, start_at=tomorrow.isoformat()), "reserved"),
        record(request(gpus=4, vcpus=8), "failed", ComputeState.FAILED),
        record(request(gpus=4, vcpus=8), "gone", ComputeState.TERMINATED),
        record(request("other", gpus=4, vcpus=8), "other"),
    ]
    used = in_use(live, "acme")
    assert used[QuotaResource.GPUS] == 4000 and used[QuotaResource.CPU_CORES] == 4000
    refusal = admit(request(gpus=1), live, quota(limits))
    assert refusal is not None and refusal.resource is QuotaResource.GPUS
    assert admit(request(vcpus=4), live, quota(limits)) is None


def test_no_quota_record_or_an_over_quota_mark_refuses() -> None:
    assert (refused := admit(request(vcpus=1), [], None)) is not None and refused.code == "no-quota"
    marked = quota(FREE)
    marked.over_quota[QuotaResource.STORAGE_GIB] = OverQuota(used=11, limit=10, since=T0, event_id="e1")
    refusal = admit(request(vcpus=1), [], marked)
    assert refusal is not None and refusal.code == "over-quota" and refusal.marked == (QuotaResource.STORAGE_GIB,)
    assert "over its storage_gib quota" in refusal.message


amounts = st.integers(min_value=0, max_value=4000).map(lambda n: n / 8)  # eighths: exercises the fractions
requests = st.builds(
    lambda vcpus, memory, storage, gpus: request(vcpus=vcpus or 0.125, memory_gib=memory, storage_gib=storage,
                                                 gpus=gpus),
    amounts, amounts, amounts, st.integers(min_value=0, max_value=8),
)
limits = st.builds(
    Quota, cpu_cores=st.integers(0, 512).map(lambda n: n / 4), memory_gib=st.integers(0, 2048),
    gpus=st.integers(0, 16), storage_gib=st.integers(0, 4096),
)


@settings(max_examples=300, deadline=None)
@given(limits, st.lists(requests, max_size=25), st.data())
def test_admitted_requests_never_take_the_tenant_over_its_quota(
    limit: Quota, asked: list[ComputeRequest], data: st.DataObject
) -> None:
    record_quota = quota(limit)
    live: list[ComputeRecord] = []
    for index, req in enumerate(asked):
        refusal = admit(req, live, record_quota)
        if refusal is None:
            live.append(record(req, f"r{index}"))
        else:  # refused only for a resource that would really go over
            for excess in refusal.excess:
                assert excess.in_use + excess.requested > quota_limit(limit, excess.resource)
        unfinished = [i for i, rec in enumerate(live) if not rec.terminal]
        if unfinished and data.draw(st.booleans(), label="finish one"):
            which = data.draw(st.sampled_from(unfinished), label="which")
            live[which] = transition(live[which], ComputeState.TERMINATED, T0)
        used = in_use(live, "acme")
        for resource in RESOURCES:
            assert used[resource] <= round(quota_limit(limit, resource) * 1000), resource


def test_a_quarantined_workload_refuses_new_compute_before_anything_else() -> None:
    refusal = admit(request(vcpus=1), [], quota(FREE), quarantined=["api", "batch"])
    assert refusal is not None and refusal.code == "quarantined" and "api, batch" in refusal.message
    assert admit(request(vcpus=1), [], quota(FREE), quarantined=[]) is None
