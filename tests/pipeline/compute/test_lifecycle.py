from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.compute.catalog import Offer
from pipeline.compute.lifecycle import (
    TRANSITIONS,
    ComputeRecord,
    ComputeState,
    IdlePolicy,
    IllegalTransition,
    TerminationReason,
    capacity_view,
    event_for,
    held_by,
    last_active,
    tenant_usage,
    termination_due,
    transition,
)
from pipeline.compute.optimizer import TenantPolicy
from pipeline.compute.request import ComputeRequest

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
REQUEST = ComputeRequest.model_validate(
    {"tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6}
)
OFFER = Offer(offer_id="p/r/gpu4/on_demand", provider="p", region="r", instance_type="gpu4", gpu_name="H100",
              gpu_count=4, vcpus=64, memory_gib=512, price_per_hour=10.0, capacity=3)
CPU = Offer(offer_id="p/r/cpu8/on_demand", provider="p", region="r", instance_type="cpu8", vcpus=8,
            memory_gib=32, price_per_hour=0.4, capacity=5)
SPOT = OFFER.model_copy(update={"offer_id": "p/r/gpu4/spot", "capacity_class": "spot", "price_per_hour": 4.0})


def running(at: datetime = T0, request_id: str = "r1") -> ComputeRecord:
    record = ComputeRecord.new(request_id, REQUEST, at)
    record = transition(record, ComputeState.ALLOCATING, at)
    record = transition(record, ComputeState.PROVISIONING, at, offer=OFFER, allocation_id="a1", price_per_hour=10.0)
    return transition(record, ComputeState.RUNNING, at)


def test_happy_path_and_timestamps() -> None:
    record = running()
    assert record.running_since == T0 and record.ends_at == T0 + timedelta(hours=6)
    record = transition(record, ComputeState.TERMINATING, T0 + timedelta(hours=1), reason="user")
    record = transition(record, ComputeState.TERMINATED, T0 + timedelta(hours=1))
    assert [h.state for h in record.history] == [
        ComputeState.REQUESTED, ComputeState.ALLOCATING, ComputeState.PROVISIONING, ComputeState.RUNNING,
        ComputeState.TERMINATING, ComputeState.TERMINATED,
    ]
    assert record.finished_at == T0 + timedelta(hours=1)
    assert record.cost_usd(T0 + timedelta(hours=5)) == pytest.approx(10.0)  # ran one hour
    assert ComputeRecord.model_validate_json(record.model_dump_json()) == record


def test_every_illegal_transition_is_refused() -> None:
    base = ComputeRecord.new("r1", REQUEST, T0)
    for source in ComputeState:
        record = base.model_copy(update={"state": source})
        for target in ComputeState:
            if target in TRANSITIONS[source]:
                assert transition(record, target, T0).state is target
            else:
                with pytest.raises(IllegalTransition):
                    transition(record, target, T0)
    with pytest.raises(ValueError):
        transition(base, ComputeState.ALLOCATING, datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        transition(base, ComputeState.ALLOCATING, T0, bogus=1)


def test_termination_at_end_of_duration_and_when_idle() -> None:
    record = running()
    idle = IdlePolicy(idle_timeout_s=1800)
    assert termination_due(record, T0 + timedelta(minutes=10), idle=idle) is None
    busy = T0 + timedelta(hours=2)
    assert termination_due(record, T0 + timedelta(hours=2, minutes=20), last_active_at=busy, idle=idle) is None
    assert termination_due(record, T0 + timedelta(hours=2, minutes=30), last_active_at=busy,
                           idle=idle) is TerminationReason.IDLE
    assert termination_due(record, T0 + timedelta(hours=6), last_active_at=T0 + timedelta(hours=5, minutes=59),
                           idle=idle) is TerminationReason.DURATION_ELAPSED
    never_idle = IdlePolicy(idle_timeout_s=None)
    assert termination_due(record, T0 + timedelta(hours=5), idle=never_idle) is None
    assert termination_due(ComputeRecord.new("r2", REQUEST, T0), T0 + timedelta(days=9)) is None


def test_last_active_from_utilization_samples() -> None:
    policy = IdlePolicy(busy_threshold=0.1)
    at = T0 + timedelta(minutes=5)
    assert last_active(T0, 0.05, at, policy) == T0
    assert last_active(T0, 0.5, at, policy) == at
    assert last_active(at, 0.9, T0, policy) == at  # out-of-order sample


def test_capacity_view_reflects_allocations_and_releases() -> None:
    offers = [OFFER, SPOT, CPU]
    before = capacity_view(offers, [], T0)
    rows = {(r.provider, r.region, r.resource_type): r for r in before.rows}
    gpu = rows[("p", "r", "gpu:H100")]
    assert (gpu.pools, gpu.capacity_instances, gpu.available_instances, gpu.available_gpus) == (1, 3, 3, 12)
    assert rows[("p", "r", "cpu")].available_vcpus == 40
    holding = [running(request_id="r1"), running(request_id="r2")]
    during = capacity_view(offers, holding, T0, tenant=TenantPolicy(tenant_id="acme", max_gpus=16, budget_usd=500))
    gpu = next(r for r in during.rows if r.resource_type == "gpu:H100")
    assert (gpu.allocated_instances, gpu.available_instances, gpu.available_gpus) == (2, 1, 4)
    assert during.tenant is not None
    assert (during.tenant.gpus_in_use, during.tenant.gpus_remaining) == (8, 8)
    assert during.tenant.budget_remaining_usd == pytest.approx(500 - 2 * 60)
    released = [transition(transition(r, ComputeState.TERMINATING, T0), ComputeState.TERMINATED, T0) for r in holding]
    after = capacity_view(offers, released, T0)
    assert next(r for r in after.rows if r.resource_type == "gpu:H100").available_instances == 3


def test_unknown_capacity_is_reported_as_unknown() -> None:
    view = capacity_view([OFFER.model_copy(update={"capacity": None})], [running()], T0)
    (row,) = view.rows
    assert row.allocated_instances == 1 and row.available_instances is None


def test_usage_and_event() -> None:
    record = running()
    usage = tenant_usage([record, running(request_id="x").model_copy(update={"tenant_id": "other"})], "acme", T0)
    assert (usage.gpus_in_use, usage.spent_usd) == (4, 60.0)
    event = event_for(record)
    assert (event.state, event.offer_id, event.allocation_id) == (ComputeState.RUNNING, OFFER.offer_id, "a1")


def test_requests_being_allocated_count_against_quota_and_budget() -> None:
    from pipeline.compute.optimizer import Candidate, Decision

    candidate = Candidate(rank=0, offer_id=OFFER.offer_id, provider="p", region="r", instance_type="gpu4",
                          capacity_class="on_demand", gpu_name="H100", gpu_count=4, vcpus=64, memory_gib=512,
                          list_price_per_hour=10.0, price_per_hour=10.0, total_cost=60.0)
    decision = Decision(tenant_id="acme", decided_at=T0, duration_hours=6, offers_considered=1, feasible_count=1,
                        candidates=[candidate], excluded={}, exclusion_details={})
    requested = ComputeRecord.new("r1", REQUEST, T0)
    allocating = transition(requested, ComputeState.ALLOCATING, T0, decision=decision)
    provisioning = transition(allocating, ComputeState.PROVISIONING, T0, offer=OFFER, price_per_hour=10.0)
    failed = transition(provisioning, ComputeState.FAILED, T0)
    assert (requested.gpus_held, requested.cost_usd(T0)) == (0, 0.0)
    assert (allocating.gpus_held, allocating.cost_usd(T0)) == (4, 60.0)  # requested GPUs, best candidate's total
    assert (provisioning.gpus_held, provisioning.cost_usd(T0)) == (4, 60.0)  # committed while booting
    assert (failed.gpus_held, failed.cost_usd(T0)) == (0, 0.0)  # never ran: nothing spent


def test_what_a_tenant_holds_counts_the_machines_of_its_allocations_only_while_they_hold() -> None:
    first, second = running(request_id="acme.1"), running(request_id="acme.2")
    other = running(request_id="globex.1").model_copy(update={"tenant_id": "globex"})
    asked = ComputeRecord.new("acme.3", REQUEST, T0)  # nothing allocated yet: nothing held
    allocating = transition(ComputeRecord.new("acme.4", REQUEST, T0), ComputeState.ALLOCATING, T0)
    ended = transition(transition(running(request_id="acme.5"), ComputeState.TERMINATING, T0, reason="user"),
                       ComputeState.TERMINATED, T0)
    releasing = transition(running(request_id="acme.6"), ComputeState.TERMINATING, T0, reason="user")
    held = held_by([first, second, other, asked, allocating, ended, releasing], "acme")
    assert held.allocations == 3 and held.request_ids == ["acme.1", "acme.2", "acme.6"]
    assert (held.gpus, held.cpu_cores, held.memory_gib) == (12, 3 * 64, 3 * 512)  # the machines, not the asks
    assert held_by([other], "acme").allocations == 0 and held_by([], "acme").gpus == 0
