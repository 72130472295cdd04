"""The caps after the combination, each step on its own: budgets, quota (scale-ups only), fair share, cost."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from pipeline.scaling.decide_caps import (
    Count,
    budget_step,
    fair_share_step,
    final_cost,
    quarantine_step,
    quota_step,
)
from pipeline.scaling.decision_models import DecisionInputs, ScalingState
from pipeline.scaling.fairshare import ResourceVector, TenantAllocation
from pipeline.scaling.policies import CostAwarePolicy
from pipeline.scaling.requests import QuotaRoom

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def budget(per_hour: float) -> CostAwarePolicy:
    return CostAwarePolicy.model_validate({
        "policy_id": "budget", "tenant_id": "acme", "workload": "api", "budget_per_hour": per_hour,
        "capacity_classes": [{"name": "on-demand", "price_per_unit_hour": 0.03},
                             {"name": "spot", "price_per_unit_hour": 0.01, "max_replicas": 3}],
    })


def grant(granted: int, requested: int = 10) -> TenantAllocation:
    return TenantAllocation(tenant_id="acme", requested=requested, granted=granted, resources=ResourceVector(),
                            dominant_resource="gpu", dominant_share=0.5, weighted_share=0.125, weight=4.0,
                            limited_by="capacity")


def test_the_quota_caps_a_scale_up_and_never_forces_a_scale_down() -> None:
    room = QuotaRoom(replicas=6, detail="cpu: 6 replicas fit")
    assert quota_step(Count(9, "policy:cpu"), 4, room) == (Count(6, "quota"), room)
    assert quota_step(Count(9, "policy:cpu"), 8, room) == (Count(8, "quota"), room)  # held, not scaled down
    assert quota_step(Count(5, "policy:cpu"), 8, room) == (Count(5, "policy:cpu"), None)
    assert quota_step(Count(9, "policy:cpu"), 4, None) == (Count(9, "policy:cpu"), None)


def test_an_over_quota_mark_holds_a_scale_up_at_the_current_count_and_says_why() -> None:
    count, held = quota_step(Count(9, "policy:cpu"), 4, None, ["memory_gib", "cpu_cores"])
    assert count == Count(4, "quota")
    assert held is not None and held.replicas == 4
    assert "marked over its cpu_cores, memory_gib quota: no scale-up" in held.detail
    # a scale-down and a hold go through; the room of a request caps first (its reason stays the one shown)
    assert quota_step(Count(2, "policy:cpu"), 4, None, ["gpus"]) == (Count(2, "policy:cpu"), None)
    assert quota_step(Count(4, "policy:cpu"), 4, None, ["gpus"]) == (Count(4, "policy:cpu"), None)
    room = QuotaRoom(replicas=0, detail="tenant is over its gpus quota")
    assert quota_step(Count(9, "request"), 4, room, ["gpus"]) == (Count(4, "quota"), room)


@given(desired=st.integers(0, 500), current=st.integers(0, 500),
       marks=st.lists(st.sampled_from(["cpu_cores", "memory_gib", "gpus"]), max_size=3),
       room=st.none() | st.integers(0, 500))
def test_the_quota_step_never_scales_up_past_a_mark_nor_down_past_the_count(
    desired: int, current: int, marks: list[str], room: int | None,
) -> None:
    quota = QuotaRoom(replicas=room, detail="room") if room is not None else None
    count, capped = quota_step(Count(desired, "policy:cpu"), current, quota, marks)
    assert count.desired <= desired  # a cap, never a raise
    assert count.desired >= min(desired, current)  # never forces a scale-down
    if marks:
        assert count.desired == min(desired, current)  # no scale-up while marked, a scale-down goes
    if count.desired != desired:
        assert capped is not None and count.binding == "quota"
    else:
        assert capped is None and count.binding == "policy:cpu"


def test_a_quarantine_holds_the_workload_at_its_floor_and_never_scales_it_up() -> None:
    assert quarantine_step(Count(9, "policy:cpu"), 5, 2, True) == (Count(2, "quarantine"), True)  # down to floor
    assert quarantine_step(Count(9, "policy:cpu"), 1, 2, True) == (Count(1, "quarantine"), True)  # not up to it
    assert quarantine_step(Count(0, "budget:b"), 5, 2, True) == (Count(0, "budget:b"), False)  # a lower cap stays
    assert quarantine_step(Count(9, "policy:cpu"), 5, 2, False) == (Count(9, "policy:cpu"), False)


@given(desired=st.integers(0, 500), current=st.integers(0, 500), lo=st.integers(0, 500))
def test_a_quarantined_count_is_never_above_the_floor_nor_the_current_count(desired: int, current: int,
                                                                           lo: int) -> None:
    count, held = quarantine_step(Count(desired, "policy:cpu"), current, lo, True)
    assert count.desired == min(desired, current, lo)
    assert held == (count.desired != desired) and count.binding == ("quarantine" if held else "policy:cpu")


def test_the_grant_caps_the_count_and_is_summarised_either_way() -> None:
    capped, summary = fair_share_step(Count(9, "policy:cpu"), grant(3))
    assert capped == Count(3, "fair_share")
    assert summary is not None and summary.capped and summary.granted == 3 and summary.limited_by == "capacity"
    kept, summary = fair_share_step(Count(2, "min_replicas"), grant(3))
    assert kept == Count(2, "min_replicas") and summary is not None and not summary.capped
    assert fair_share_step(Count(2, "hold"), None) == (Count(2, "hold"), None)


def test_a_budget_caps_to_what_it_pays_for_and_the_final_cost_is_of_the_capped_count() -> None:
    inputs = DecisionInputs(tenant_id="acme", workload="api", now=NOW, current_replicas=2, demand_window=[100.0],
                            capacity_per_replica=1.0)
    state = ScalingState(tenant_id="acme", workload="api")
    policy = budget(0.06)  # 3 spot at 0.01 + 1 on-demand at 0.03 = 0.06 per hour
    budgets = budget_step([policy], Count(10, "policy:cpu"), 1.0, NOW, 0, state, inputs)
    assert budgets.count == Count(4, "budget:budget")
    assert [s.replicas for s in budgets.summaries] == [4] and budgets.summaries[0].capped
    assert [e.policy_id for e in budgets.evaluations] == ["budget"] and budgets.spent == {"budget": 0.0}
    cost = final_cost([policy], budgets.count.desired, 1.0, NOW, budgets.spent)
    assert cost.by_class == {"spot": 3, "on-demand": 1} and cost.currency == "EUR"
    assert cost.cost_per_hour is not None and abs(cost.cost_per_hour - 0.06) < 1e-9
    assert cost.states["budget"].month == "2026-05" and cost.states["budget"].since == NOW
    roomy = budget_step([budget(10.0)], Count(10, "policy:cpu"), 1.0, NOW, 0, state, inputs)
    assert roomy.count == Count(10, "policy:cpu")  # within budget: the binding stays the policy's
    assert final_cost([], 10, 1.0, NOW, {}).cost_per_hour is None
