from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.compute.catalog import Offer
from pipeline.compute.lifecycle import (
    TRANSITIONS,
    ComputeRecord,
    ComputeState,
    IdleStep,
    IllegalTransition,
    TerminationReason,
    capacity_view,
    event_for,
    held_by,
    idle_step,
    idle_warning_event,
    last_active,
    tenant_usage,
    termination_due,
    transition,
)
from pipeline.compute.optimizer import TenantPolicy
from pipeline.compute.request import MAX_IDLE_MINUTES, ComputeRequest, IdleTermination
from pipeline.compute.runtime import status_event

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


def test_termination_at_end_of_duration_only() -> None:
    record = running()
    assert termination_due(record, T0 + timedelta(minutes=10)) is None
    assert termination_due(record, T0 + timedelta(hours=5, minutes=59)) is None
    assert termination_due(record, T0 + timedelta(hours=6)) is TerminationReason.DURATION_ELAPSED
    assert termination_due(ComputeRecord.new("r2", REQUEST, T0), T0 + timedelta(days=9)) is None


def test_last_active_from_utilization_samples() -> None:
    at = T0 + timedelta(minutes=5)
    assert last_active(T0, 0.05, at, 0.1) == T0
    assert last_active(T0, 0.1, at, 0.1) == at  # at the threshold is busy
    assert last_active(at, 0.9, T0, 0.1) == at  # out-of-order sample


IDLE_30 = IdleTermination(after_minutes=30, below_utilization=0.1)


def watched(policy: IdleTermination | None = IDLE_30, **fields: object) -> ComputeRecord:
    """A record running since T0 whose request has ``policy``, with ``fields`` (samples, warning) set."""
    request = REQUEST.model_copy(update={"idle_termination": policy})
    record = ComputeRecord.new("r1", request, T0)
    record = transition(record, ComputeState.ALLOCATING, T0)
    record = transition(record, ComputeState.PROVISIONING, T0, offer=OFFER, allocation_id="a1", price_per_hour=10.0)
    return transition(record, ComputeState.RUNNING, T0).model_copy(update=fields)


def test_the_idle_warning_comes_one_grace_period_before_the_termination() -> None:
    grace = 600.0
    minute = timedelta(minutes=1)
    # observed idle 19 min (T0 .. T0+19): nothing yet; 20 min = 30 - the 10-minute grace: warn
    assert idle_step(watched(last_sample_at=T0 + 19 * minute), T0 + 19 * minute, grace) is None
    assert idle_step(watched(last_sample_at=T0 + 20 * minute), T0 + 20 * minute, grace) is IdleStep.WARN
    warned = watched(last_sample_at=T0 + 30 * minute, idle_warned_at=T0 + 25 * minute)
    assert idle_step(warned, T0 + 34 * minute, grace) is None  # observed 30 min, but warned only 9 min ago
    assert idle_step(warned, T0 + 35 * minute, grace) is IdleStep.TERMINATE
    # a busy sample after the warning starts a new stretch: the old warning no longer counts
    busy_again = warned.model_copy(update={"last_active_at": T0 + 26 * minute})
    assert idle_step(busy_again, T0 + 35 * minute, grace) is None
    assert idle_step(busy_again.model_copy(update={"last_sample_at": T0 + 46 * minute}), T0 + 46 * minute,
                     grace) is IdleStep.WARN
    # a window shorter than the grace: warned at the first idle sample, terminated a grace period later
    short = IdleTermination(after_minutes=5, below_utilization=0.5)
    assert idle_step(watched(short, last_sample_at=T0 + minute), T0 + minute, grace) is IdleStep.WARN
    early = watched(short, last_sample_at=T0 + 6 * minute, idle_warned_at=T0 + minute)
    assert idle_step(early, T0 + 10 * minute, grace) is None
    assert idle_step(early, T0 + 11 * minute, grace) is IdleStep.TERMINATE


def test_no_policy_or_no_sample_is_never_idle() -> None:
    late = T0 + timedelta(hours=5)
    assert idle_step(watched(None, last_sample_at=T0 + timedelta(hours=4)), late, 60) is None
    assert idle_step(watched(), late, 60) is None  # opted in, but never observed
    # the last sample was busy: nothing says the machine is idle since, however long ago it was
    busy = watched(last_sample_at=T0 + timedelta(minutes=3), last_active_at=T0 + timedelta(minutes=3))
    assert idle_step(busy, late, 60) is None
    assert idle_step(watched(last_sample_at=late).model_copy(update={"state": ComputeState.TERMINATING}), late,
                     60) is None


@settings(max_examples=300, deadline=None)
@given(
    after=st.integers(min_value=1, max_value=MAX_IDLE_MINUTES),
    grace=st.floats(min_value=1.0, max_value=86400.0),
    busy_s=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    sample_s=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    warned_s=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    now_s=st.integers(min_value=0, max_value=2 * 10**6),
)
def test_idle_step_never_terminates_unobserved_unwarned_or_early(
    after: int, grace: float, busy_s: int | None, sample_s: int | None, warned_s: int | None, now_s: int
) -> None:
    def at(seconds: int | None) -> datetime | None:
        return None if seconds is None else T0 + timedelta(seconds=seconds)

    record = watched(IdleTermination(after_minutes=after, below_utilization=0.3), last_active_at=at(busy_s) or T0,
                     last_sample_at=at(sample_s), idle_warned_at=at(warned_s))
    now = T0 + timedelta(seconds=now_s)
    step = idle_step(record, now, grace)
    since = max(T0, record.last_active_at or T0)
    last_sample = record.last_sample_at
    if last_sample is None or last_sample <= since:
        assert step is None  # no idle sample observed since the last busy one
        return
    observed = (min(last_sample, now) - since).total_seconds()
    if step is IdleStep.TERMINATE:
        warned_at = record.idle_warned_at
        assert warned_at is not None and warned_at >= since  # warned within this idle stretch
        assert (now - warned_at).total_seconds() >= grace  # a whole grace period before
        assert observed >= after * 60  # idle observed for the whole window
    if step is IdleStep.WARN:
        assert observed >= after * 60 - grace
        assert record.idle_warned_at is None or record.idle_warned_at < since  # once per stretch
    if observed < max(after * 60 - grace, 0):
        assert step is None


def test_the_idle_warning_event_id_is_the_stretchs() -> None:
    minute = timedelta(minutes=1)
    record = watched(last_sample_at=T0 + 20 * minute, last_active_at=T0 + 2 * minute)
    first = status_event(idle_warning_event(record, T0 + 20 * minute, 600), record)
    again = status_event(idle_warning_event(record, T0 + 21 * minute, 600), record)
    assert (first.status, first.previous_status, first.kind) == ("idle-warning", "running", "compute-status")
    assert first.event_id == again.event_id
    assert first.detail["terminate_not_before"] == (T0 + 32 * minute).isoformat().replace("+00:00", "Z")
    later = record.model_copy(update={"last_active_at": T0 + 40 * minute, "last_sample_at": T0 + 60 * minute})
    assert status_event(idle_warning_event(later, T0 + 60 * minute, 600), later).event_id != first.event_id
    assert status_event(event_for(record), record).event_id != first.event_id


def test_idle_termination_is_bounded() -> None:
    with pytest.raises(ValidationError):
        IdleTermination(after_minutes=0, below_utilization=0.1)
    with pytest.raises(ValidationError):
        IdleTermination(after_minutes=MAX_IDLE_MINUTES + 1, below_utilization=0.1)
    with pytest.raises(ValidationError):
        IdleTermination(after_minutes=30, below_utilization=1.01)
    with pytest.raises(ValidationError):
        IdleTermination.model_validate({"after_minutes": 30, "below_utilization": 0.1, "extra": 1})
    assert REQUEST.idle_termination is None  # opt-in: never idle-terminated by default


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
