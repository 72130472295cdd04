"""Decisions of the engine (engine_decisions): when they are applied, budgets, grants, a scale in flight."""

from __future__ import annotations

from datetime import timedelta

from pipeline.events.models import QuotaResource
from pipeline.scaling.fairshare import ResourceVector, TenantAllocation
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.pool import pool_grants
from pipeline.scaling.records import ApplyReport, Demand, Grant, Observation
from pipeline.tenants.models import AnomalyLog, OverQuota
from pipeline.typed_table import TypedTable
from tests.pipeline.scaling.support import (
    POOL,
    T0,
    WALL,
    FakeCluster,
    engine,
    gpu_demand,
    latest,
    observed,
    put_policy,
    replay,
    sample,
)


def test_a_decision_waits_for_the_deployment_to_be_observed_then_is_applied() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    first = eng.on_sample(sample(T0, 3.0))
    assert first is not None and first.applies == [ApplyRequest("acme", "api")]
    outcome = eng.on_sample(sample(T0 + timedelta(minutes=30), 3.0))
    assert outcome is not None and outcome.applies == [ApplyRequest("acme", "api")]  # observe, not scale
    stored = latest(eng)
    assert not stored.applied and stored.apply_reason == "waiting for the Deployment to be observed"

    again = eng.on_applied(ApplyReport(tenant_id="acme", workload="api", observation=observed(2), reported_at=WALL))
    assert again.applies == [ApplyRequest("acme", "api", 6)]
    redone = latest(eng)
    assert redone.trigger == "observed" and redone.applied and redone.decision.current_replicas == 2


def test_forecast_only_and_missing_deployments_are_never_applied() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "pred", "kind": "predictive", "forecast_only": True, "min_residuals": 0})
    cluster = FakeCluster(eng, replicas=1)
    replay(eng, T0, T0 + timedelta(hours=3), lambda _: 9.0, cluster)
    stored = latest(eng)
    assert stored.apply_reason.startswith("forecast-only") and not stored.applied
    assert stored.decision.policies[0].desired is not None and stored.decision.policies[0].desired > 1
    assert cluster.scaled == [] and stored.decision.forecast is not None

    put_policy(eng, {"policy_id": "pred", "kind": "predictive", "min_residuals": 0})
    eng.on_applied(ApplyReport(tenant_id="acme", workload="api", reported_at=WALL,
                               observation=Observation(exists=False, observed_at=WALL)))
    eng.on_sample(sample(T0 + timedelta(hours=3, minutes=30), 9.0))
    stored = latest(eng)
    assert stored.apply_reason == "the Deployment does not exist" and not stored.applied


def test_a_budget_caps_a_scale_up_and_says_so() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    put_policy(eng, {"policy_id": "budget", "kind": "cost_aware", "budget_per_hour": 3.0,
                     "capacity_classes": [{"name": "on-demand", "price_per_unit_hour": 1.0}]})
    cluster = FakeCluster(eng)
    replay(eng, T0, T0 + timedelta(minutes=30), lambda _: 3.0, cluster)  # 6 replicas wanted
    stored = latest(eng)
    assert stored.decision.desired_replicas == 3 and stored.decision.binding == "budget:budget"
    assert "capped by budget of policy budget" in stored.decision.explanation
    assert cluster.replicas[("acme", "api")] == 3


def test_an_over_quota_mark_holds_a_policy_scale_up_and_a_lifted_mark_releases_it() -> None:
    eng = engine()
    quota = eng.tables.quotas.get("acme")
    assert quota is not None
    eng.tables.quotas.put("acme", quota.model_copy(update={"over_quota": {QuotaResource.MEMORY_GIB: OverQuota(
        used=300, limit=256, since=T0, event_id="q1")}}))
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    cluster = FakeCluster(eng, replicas=2)
    replay(eng, T0, T0 + timedelta(minutes=30), lambda _: 3.0, cluster)  # 6 replicas wanted
    held = latest(eng)
    assert held.decision.desired_replicas == 2 and held.decision.binding == "quota"
    assert "quota: tenant is marked over its memory_gib quota: no scale-up" in held.decision.explanation
    assert cluster.replicas[("acme", "api")] == 2

    replay(eng, T0 + timedelta(minutes=60), T0 + timedelta(minutes=90), lambda _: 0.4, cluster)  # 1 wanted
    assert latest(eng).decision.desired_replicas == 1 and cluster.replicas[("acme", "api")] == 1  # down goes

    eng.tables.quotas.put("acme", quota)  # the mark lifted
    replay(eng, T0 + timedelta(minutes=120), T0 + timedelta(minutes=150), lambda _: 3.0, cluster)
    released = latest(eng)  # scaled up again (as far as the policy's scale-up rate limit lets it)
    assert released.decision.binding != "quota" and released.decision.desired_replicas > 1
    assert cluster.replicas[("acme", "api")] == released.decision.desired_replicas


def test_a_quarantined_workload_is_held_at_its_floor_until_released() -> None:
    eng = engine()
    assert eng.tables.anomalies is not None
    eng.tables.anomalies.put("acme", AnomalyLog(tenant_id="acme", quarantined=["etl", "api"]))
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5, "min_replicas": 2})
    cluster = FakeCluster(eng, replicas=4)
    replay(eng, T0, T0 + timedelta(minutes=30), lambda _: 3.0, cluster)  # 6 replicas wanted
    held = latest(eng)
    assert held.decision.desired_replicas == 2 and held.decision.binding == "quarantine"
    assert "quarantined: held at 2 (the policy floor, never a scale-up)" in held.decision.explanation
    assert cluster.replicas[("acme", "api")] == 2

    eng.tables.anomalies.put("acme", AnomalyLog(tenant_id="acme", quarantined=["etl"]))  # released
    replay(eng, T0 + timedelta(minutes=60), T0 + timedelta(minutes=90), lambda _: 3.0, cluster)
    released = latest(eng)
    assert released.decision.binding != "quarantine" and released.decision.desired_replicas > 2
    assert cluster.replicas[("acme", "api")] == released.decision.desired_replicas


def test_a_workload_scales_up_only_as_far_as_its_grant() -> None:
    eng = engine(pool=POOL, tier_weights={"enterprise": 4.0})
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    cluster = FakeCluster(eng, cpu=1.0, gpus=1.0)
    outcomes = replay(eng, T0, T0 + timedelta(minutes=30), lambda _: 2.0, cluster)  # 4 replicas wanted
    stored = latest(eng)
    assert stored.uncapped_replicas == 4 and stored.decision.desired_replicas == 1  # no grant yet: hold
    assert stored.decision.fair_share is not None and stored.decision.fair_share.limited_by == "pending"
    [demand] = [d for o in outcomes for d in o.demands][-1:]
    assert demand.replicas == 4 and demand.per_replica.gpu == 1.0 and demand.weight == 4.0
    table: TypedTable[Demand] = TypedTable({}, Demand)
    pool_grants(POOL, table, gpu_demand("other", 1, 1), WALL, 600)
    [grant] = [g for g in pool_grants(POOL, table, demand, WALL, 600) if g.tenant_id == "acme"]
    cluster.handle(eng.on_grant(grant))
    stored = latest(eng)
    assert stored.trigger == "fair_share" and stored.decision.desired_replicas == grant.allocation.granted == 3
    assert stored.decision.binding == "fair_share" and "fair share: granted 3 of 4" in stored.decision.explanation
    assert cluster.replicas[("acme", "api")] == 3


def test_a_scale_in_flight_counts_as_the_current_replicas() -> None:
    eng = engine(pool=POOL, tier_weights={"enterprise": 4.0})
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    eng.on_applied(ApplyReport(tenant_id="acme", workload="api", observation=observed(1, gpus=1.0), reported_at=WALL))
    replay(eng, T0, T0 + timedelta(minutes=30), lambda _: 2.0)  # 4 wanted, capped by the pending grant
    state = eng.tables.state.get("acme/api")
    assert state is not None and state.last is not None and state.last.desired == 1

    def grant(granted: int) -> Grant:
        return Grant(tenant_id="acme", workload="api", contended=True, capacity=POOL, used=POOL, computed_at=WALL,
                     demand_seq=state.demand_seq,
                     allocation=TenantAllocation(tenant_id="acme/api", requested=4, granted=granted,
                                                 resources=ResourceVector(), dominant_resource="gpu",
                                                 dominant_share=0.5, weighted_share=0.1, weight=4.0,
                                                 limited_by="capacity"))

    up = eng.on_grant(grant(4))
    assert up.applies == [ApplyRequest("acme", "api", 4)]
    down = eng.on_grant(grant(1))  # before the patch to 4 has even reported back
    assert down.applies == [ApplyRequest("acme", "api", 1)]
    failed = eng.on_applied(ApplyReport(tenant_id="acme", workload="api", requested_replicas=1, error="timeout",
                                        reported_at=WALL))
    assert not failed and eng.tables.state.get("acme/api").observed is None  # type: ignore[union-attr]


def test_a_decision_made_while_waiting_for_the_pool_is_remade_with_its_answer() -> None:
    eng = engine(pool=POOL, tier_weights={"enterprise": 4.0})
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    cluster = FakeCluster(eng, cpu=1.0, gpus=2.0)
    demands = [d for o in replay(eng, T0, T0 + timedelta(minutes=30), lambda _: 2.0, cluster) for d in o.demands]
    waiting = latest(eng)
    assert waiting.decision.fair_share is not None and waiting.decision.fair_share.limited_by == "pending"
    table: TypedTable[Demand] = TypedTable({}, Demand)
    pool_grants(POOL, table, gpu_demand("x", 1, 2, replicas=2), WALL, 600)
    pool_grants(POOL, table, gpu_demand("y", 1, 2, replicas=2), WALL, 600)  # 4 of the 6 GPUs taken
    [grant] = [g for g in pool_grants(POOL, table, demands[-1], WALL, 600) if g.tenant_id == "acme"]
    assert grant.allocation.granted == 1  # the count it already has
    cluster.handle(eng.on_grant(grant))
    answered = latest(eng)
    assert answered.trigger == "fair_share" and answered.decision.desired_replicas == 1
    assert answered.decision.fair_share is not None and answered.decision.fair_share.limited_by == "capacity"
    assert not eng.on_grant(grant)  # the same answer again changes nothing
