"""Scaling requests as a trigger of the engine: the pure parts (target, quota room, ``decide`` with a request,
as properties) and the engine's handling over dict tables (read first, decide once per event id, caps, refusals)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.contract.schema_files import SCHEMA_DIR
from pipeline.contract.topics import SCALING_EVENTS
from pipeline.events.models import MAX_REQUESTED_REPLICAS, QuotaResource, ScalingRequest
from pipeline.outputs import Refused, derived_id
from pipeline.scaling.decide import decide
from pipeline.scaling.decision_models import DecisionInputs
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.engine_io import EngineConfig, Outcome
from pipeline.scaling.fairshare import ResourceVector
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.policies import parse_policy
from pipeline.scaling.pool import pool_grants
from pipeline.scaling.records import MAX_PENDING_REQUESTS, ApplyReport, Demand, Observation, ScalingDecisionEvent
from pipeline.scaling.requests import QuotaRoom, RequestInput, quota_room, resolve_target
from pipeline.tenants.models import OverQuota
from pipeline.typed_table import TypedTable
from pipeline.usage import workload_key
from tests.pipeline.scaling.support import POOL, T0, WALL, FakeCluster, engine, latest, observed, put_policy, sample

# -- pure functions -----------------------------------------------------------------------------------------


@given(desired=st.one_of(st.none(), st.integers(0, MAX_REQUESTED_REPLICAS)),
       delta=st.integers(-MAX_REQUESTED_REPLICAS, MAX_REQUESTED_REPLICAS), current=st.integers(0, 1_000_000))
def test_a_requests_target_is_bounded_and_a_desired_count_is_taken_as_is(desired: int | None, delta: int,
                                                                          current: int) -> None:
    target, asked = resolve_target(desired, None if desired is not None else delta, current)
    assert 0 <= target <= MAX_REQUESTED_REPLICAS
    if desired is not None:
        assert target == desired and asked == f"desired_replicas {desired}"
    else:
        assert target == max(0, min(current + delta, MAX_REQUESTED_REPLICAS))
        assert asked == f"delta {delta:+d} from {current}"


vectors = st.builds(ResourceVector, cpu=st.floats(0, 64), memory=st.floats(0, 256), gpu=st.floats(0, 8))


@given(per_replica=vectors, limits=vectors, others=vectors)
def test_the_quota_room_is_the_most_replicas_that_fit_next_to_the_other_workloads(
        per_replica: ResourceVector, limits: ResourceVector, others: ResourceVector) -> None:
    room = quota_room(per_replica, limits, others)
    needs = [(each, limit, used) for each, limit, used in
             zip(per_replica.as_tuple(), limits.as_tuple(), others.as_tuple(), strict=True) if each > 0]
    if not needs:
        assert room is None
        return
    assert room is not None and room.replicas >= 0 and "at most" in room.detail
    for each, limit, used in needs:  # they fit...
        assert room.replicas == 0 or used + room.replicas * each <= limit + 1e-6
    # ...and one more does not fit in the tightest resource (or the room is the most a request may ask for)
    assert room.replicas == MAX_REQUESTED_REPLICAS or any(
        used + (room.replicas + 1) * each > limit - 1e-6 for each, limit, used in needs)


def test_the_quota_room_names_the_tightest_resource() -> None:
    room = quota_room(ResourceVector(cpu=2, memory=1, gpu=1), ResourceVector(cpu=32, memory=128, gpu=4),
                      ResourceVector(cpu=4, gpu=1))
    assert room == QuotaRoom(replicas=3, detail="at most 3 replicas fit in the gpu quota (4, of which the tenant's "
                                                 "other workloads request 1; one replica requests 1)")
    assert quota_room(ResourceVector(cpu=1), ResourceVector(cpu=2), ResourceVector(cpu=5)).replicas == 0


def inputs(current: int, target: int, quota: QuotaRoom | None) -> DecisionInputs:
    return DecisionInputs(tenant_id="acme", workload="api", now=WALL, current_replicas=current, demand_window=[],
                          capacity_per_replica=1.0, quota=quota,
                          request=RequestInput(event_id="r1", target=target, asked=f"desired_replicas {target}"))


@settings(max_examples=300, deadline=None)
@given(bounds=st.tuples(st.integers(0, 50), st.integers(0, 50)).map(sorted), current=st.integers(0, 80),
       target=st.integers(0, 100), room=st.one_of(st.none(), st.integers(0, 80)))
def test_a_request_is_applied_within_the_policy_bounds_and_the_quota(bounds: list[int], current: int, target: int,
                                                                     room: int | None) -> None:
    lo, hi = bounds
    policy = parse_policy({"tenant_id": "acme", "workload": "api", "policy_id": "cpu", "kind": "target_tracking",
                           "target_utilization": 0.5, "min_replicas": lo, "max_replicas": hi})
    quota = QuotaRoom(replicas=room, detail="room") if room is not None else None
    decision, _ = decide(inputs(current, target, quota), [policy])
    desired = decision.desired_replicas
    assert desired <= hi  # never above the policy's max
    if room is not None and desired > current:
        assert desired <= room  # a scale-up never goes beyond the quota's room
    ceiling = max(current, room) if room is not None else hi
    assert desired >= min(lo, ceiling)  # at the policy's min unless the quota has no room for it
    if lo <= target <= hi and (room is None or target <= max(current, room)):
        assert desired == target and decision.binding == "request"  # what fits is granted as asked
    [request] = [p for p in decision.policies if p.kind == "request"]
    assert request.active and request.desired == target
    assert not next(p for p in decision.policies if p.policy_id == "cpu").active  # explained, not combined
    if desired != target:
        assert f"request r1 for {target} replicas: capped at {desired} by {decision.binding}" in decision.explanation


# -- the engine ------------------------------------------------------------------------------------------------


def request(event_id: str = "r1", workload: str = "api", **target: Any) -> ScalingRequest:
    return ScalingRequest(event_id=event_id, tenant_id="acme", occurred_at=WALL, workload=workload,
                          reason="launch", **(target or {"desired_replicas": 5}))


def decision_events(outcome: Outcome) -> list[ScalingDecisionEvent]:
    return [e.value for e in outcome.emits if isinstance(e.value, ScalingDecisionEvent)]


def test_a_request_reads_the_deployment_then_is_decided_and_applied_once() -> None:
    eng = engine()
    cluster = FakeCluster(eng, replicas=1)
    first = eng.on_request(request())
    assert first.applies == [ApplyRequest("acme", "api")] and not first.emits  # read the Deployment first
    outcome = cluster.handle(first)
    [event] = decision_events(outcome)
    assert event.trigger == "request" and event.status == "accepted" and event.cause_event_id == "r1"
    assert event.command_id == derived_id(workload_key("acme", "api"), "request", "r1")
    assert event.desired_replicas == 5 and event.current_replicas == 1 and event.binding == "request"
    assert cluster.scaled == [("acme", "api", 5)]
    stored = latest(eng)
    assert stored.trigger == "request" and stored.applied and stored.cause_event_id == "r1"
    assert "request r1" in stored.decision.explanation and "desired_replicas 5: launch" in stored.decision.explanation
    schema = (SCHEMA_DIR / f"{SCALING_EVENTS}.v1.json").read_text()
    jsonschema.validate(event.model_dump(mode="json"), json.loads(schema))

    # redelivered (a restart before its offset was committed): nothing is decided or applied again
    assert not eng.on_request(request())
    assert not cluster.handle(eng.on_applied(ApplyReport(tenant_id="acme", workload="api", observation=observed(5),
                                                         reported_at=WALL)))
    assert cluster.scaled == [("acme", "api", 5)] and len(eng.recent_decisions("acme", "api")) == 1


def test_a_delta_counts_from_the_replicas_read_and_is_not_added_again_when_remade() -> None:
    eng = engine(pool=POOL)
    cluster = FakeCluster(eng, replicas=1, gpus=1.0)
    outcome = cluster.handle(eng.on_request(request(delta=2)))
    waiting = latest(eng)  # no grant yet: capped at the current count until the pool answers
    assert waiting.trigger == "request" and waiting.decision.desired_replicas == 1
    assert "delta +2 from 1" in waiting.decision.explanation and waiting.decision.binding == "fair_share"
    [demand] = outcome.demands
    assert demand.replicas == 3
    table: TypedTable[Demand] = TypedTable({}, Demand)
    for _ in range(2):  # the grant, then the same grant again: the count is 3 both times, never 5
        [grant] = pool_grants(POOL, table, demand, WALL, 600)
        cluster.handle(eng.on_grant(grant))
        remade = latest(eng)
        assert remade.trigger == "fair_share" and remade.cause_event_id == "r1"
        assert remade.decision.desired_replicas == 3 and cluster.replicas[("acme", "api")] == 3


def test_a_request_above_the_policy_max_is_capped_and_says_why() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5, "min_replicas": 1,
                     "max_replicas": 4})
    cluster = FakeCluster(eng, replicas=1)
    cluster.handle(eng.on_request(request(desired_replicas=50)))
    stored = latest(eng)
    assert stored.applied and stored.decision.desired_replicas == 4 and stored.decision.binding == "max_replicas"
    assert "request r1 for 50 replicas: capped at 4 by max_replicas" in stored.decision.explanation
    assert cluster.replicas[("acme", "api")] == 4


def test_a_request_is_capped_by_the_quota_left_by_the_other_workloads() -> None:
    eng = engine()  # quota: 64 cores, 4 GPUs
    cluster = FakeCluster(eng, replicas=1, cpu=8.0)
    cluster.handle(eng.on_request(request("w1", workload="etl", desired_replicas=3)))  # 24 cores
    cluster.handle(eng.on_request(request("r1", desired_replicas=20)))  # 8 cores each: 40 cores left, 5 replicas
    stored = latest(eng)
    assert stored.decision.desired_replicas == 5 and stored.decision.binding == "quota"
    assert "at most 5 replicas fit in the cpu quota (64, of which the tenant's other workloads request 24" in (
        stored.decision.explanation)
    assert cluster.replicas == {("acme", "etl"): 3, ("acme", "api"): 5}


def test_a_tenant_marked_over_its_quota_is_not_scaled_up_but_may_scale_down() -> None:
    eng = engine()
    quota = eng.tables.quotas.get("acme")
    assert quota is not None
    eng.tables.quotas.put("acme", quota.model_copy(update={"over_quota": {QuotaResource.CPU_CORES: OverQuota(
        used=70, limit=64, since=T0, event_id="q1")}}))
    cluster = FakeCluster(eng, replicas=2)
    cluster.handle(eng.on_request(request("up", desired_replicas=6)))
    held = latest(eng)
    assert held.decision.desired_replicas == 2 and held.decision.binding == "quota" and not held.applied
    assert "over its cpu_cores quota" in held.decision.explanation
    cluster.handle(eng.on_request(request("down", desired_replicas=1)))
    assert latest(eng).applied and cluster.replicas[("acme", "api")] == 1


def test_a_request_for_a_missing_or_unreadable_deployment_is_recorded_not_applied() -> None:
    eng = engine(pool=POOL)
    eng.on_request(request("gone"))
    outcome = eng.on_applied(ApplyReport(tenant_id="acme", workload="api",
                                         observation=Observation(exists=False, observed_at=WALL), reported_at=WALL))
    [event] = decision_events(outcome)
    assert event.status == "not-applied" and not outcome.applies
    assert not outcome.demands  # no share of the pool for a Deployment that is not there
    assert latest(eng).apply_reason == "the Deployment does not exist"

    eng.on_request(request("denied"))
    outcome = eng.on_applied(ApplyReport(tenant_id="acme", workload="api", error="Kubernetes API answered 403",
                                         reported_at=WALL))
    [event] = decision_events(outcome)
    assert event.cause_event_id == "denied" and not outcome.applies
    assert latest(eng).apply_reason == "the Deployment could not be read: Kubernetes API answered 403"

    # the Deployment shows up later (read for some other reason): the request recorded as not applied stays so
    later = eng.on_applied(ApplyReport(tenant_id="acme", workload="api", observation=observed(1), reported_at=WALL))
    assert not later and latest(eng).cause_event_id == "denied" and len(eng.recent_decisions("acme", "api")) == 2


def test_a_failed_patch_reads_the_deployment_again_before_deciding_a_waiting_request() -> None:
    eng = engine()
    eng.on_request(request())
    outcome = eng.on_applied(ApplyReport(tenant_id="acme", workload="api", requested_replicas=3, error="conflict",
                                         reported_at=WALL))
    assert outcome.applies == [ApplyRequest("acme", "api")] and not outcome.emits


def test_requests_for_unknown_tenants_or_beyond_the_waiting_limit_are_refused() -> None:
    eng = engine()
    with pytest.raises(Refused) as unknown:
        eng.on_request(ScalingRequest(event_id="x", tenant_id="nobody", occurred_at=WALL, workload="api", delta=1))
    assert unknown.value.reason == "unknown-tenant"
    for n in range(MAX_PENDING_REQUESTS):
        eng.on_request(request(f"r{n}", delta=1))
    with pytest.raises(Refused) as full:
        eng.on_request(request("one-more", delta=1))
    assert full.value.reason == "too-many-requests"
    # the waiting ones are decided in order, each from the count the one before set
    cluster = FakeCluster(eng, replicas=1)
    cluster.handle(eng.on_applied(ApplyReport(tenant_id="acme", workload="api", observation=observed(1),
                                              reported_at=WALL)))
    assert cluster.replicas[("acme", "api")] == 1 + MAX_PENDING_REQUESTS


def test_with_applying_off_a_request_is_decided_at_once_and_explained() -> None:
    eng = engine(apply_enabled=False)
    outcome = eng.on_request(request())
    [event] = decision_events(outcome)
    assert event.trigger == "request" and event.status == "not-applied" and not outcome.applies
    assert latest(eng).apply_reason.startswith("applying is off")


def test_without_kubernetes_decisions_are_recorded_and_only_advise() -> None:
    """KUBERNETES_ENABLED=false: nothing to read or scale, so the engine decides at once and says why."""
    assert EngineConfig.from_settings(Settings()).apply_enabled
    config = EngineConfig.from_settings(Settings(kubernetes_enabled=False))
    assert not config.apply_enabled and config.apply_off_reason == "applying is off (KUBERNETES_ENABLED=false)"
    both = EngineConfig.from_settings(Settings(kubernetes_enabled=False, scaling_apply_enabled=False))
    assert both.apply_off_reason == "applying is off (SCALING_APPLY_ENABLED=false)"
    eng = engine(apply_enabled=config.apply_enabled, apply_off_reason=config.apply_off_reason)
    outcome = eng.on_request(request())
    [event] = decision_events(outcome)
    assert event.status == "not-applied" and not outcome.applies
    assert latest(eng).apply_reason == "applying is off (KUBERNETES_ENABLED=false)"
    assert eng.reads_due(0.0) == []


def test_the_policies_decide_again_at_the_next_window() -> None:
    """A request is one decision, not a new policy: the workload's policies act again at the next window (as a
    manual ``kubectl scale`` next to an autoscaler)."""
    eng = engine()
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5, "max_replicas": 10})
    cluster = FakeCluster(eng, replicas=1)
    cluster.handle(eng.on_request(request(desired_replicas=2)))
    assert cluster.replicas[("acme", "api")] == 2
    start = WALL + timedelta(hours=1)
    for minutes in (0, 15, 30):  # 3 cores at a target of 0.5 per 1-core replica: the policy wants 6
        cluster.handle(eng.on_sample(sample(start + timedelta(minutes=minutes), 3.0)))
    window = latest(eng)
    assert window.trigger == "window" and window.cause_event_id is None and window.decision.binding == "policy:cpu"
    assert cluster.replicas[("acme", "api")] == 6


def test_reads_that_requests_wait_for_are_asked_again_after_a_restart_or_a_lost_report() -> None:
    first = engine()
    first.on_request(request())  # taken; its read went to a queue that dies with the process
    clock = [WALL]
    restarted = ScalingEngine(first.config, first.tables, wall=lambda: clock[0])
    assert restarted.reads_due(30) == [ApplyRequest("acme", "api")]  # at once, from the state table
    assert restarted.reads_due(30) == []  # asked for: not again before it waited 30 s
    clock[0] = WALL + timedelta(seconds=31)
    assert restarted.reads_due(30) == [ApplyRequest("acme", "api")]  # the report was lost: ask again
    cluster = FakeCluster(restarted, replicas=1)
    cluster.handle(restarted.on_applied(ApplyReport(tenant_id="acme", workload="api", observation=observed(1),
                                                    reported_at=WALL)))
    assert cluster.scaled == [("acme", "api", 5)] and latest(restarted).cause_event_id == "r1"
    clock[0] = WALL + timedelta(hours=1)
    assert restarted.reads_due(30) == []  # decided: nothing waits
