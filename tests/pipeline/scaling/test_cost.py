from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.scaling.cost import (
    allowed_spend_per_hour,
    apply_budget,
    hours_left_in_month,
    max_affordable,
    month_key,
    ordered_classes,
    place,
)
from pipeline.scaling.decide import decide
from pipeline.scaling.decision_models import DecisionInputs
from pipeline.scaling.policies import CapacityClass, CostAwarePolicy, Policy, TargetTrackingPolicy

NOW = datetime(2026, 3, 16, 12, 0, tzinfo=UTC)


def cost_policy(**kw: object) -> CostAwarePolicy:
    doc = {
        "policy_id": "budget",
        "tenant_id": "acme",
        "workload": "api",
        "currency": "EUR",
        "budget_per_hour": 0.12,
        "capacity_classes": [
            {"name": "on-demand", "price_per_unit_hour": 0.03},
            {"name": "spot", "price_per_unit_hour": 0.01, "max_replicas": 3},
        ],
        **kw,
    }
    return CostAwarePolicy.model_validate(doc)


def test_cheapest_classes_first() -> None:
    policy = cost_policy()
    classes = ordered_classes(policy)
    assert [c.name for c in classes] == ["spot", "on-demand"]
    placement = place(5, classes, capacity_per_replica=2.0)
    assert placement.replicas_by_class == {"spot": 3, "on-demand": 2}
    assert placement.cost_per_hour == pytest.approx(3 * 2 * 0.01 + 2 * 2 * 0.03)
    listed = place(5, cost_policy(prefer_cheaper=False).capacity_classes, 2.0)
    assert listed.replicas_by_class == {"on-demand": 5}


def test_max_affordable() -> None:
    classes = ordered_classes(cost_policy())
    assert max_affordable(classes, 2.0, 0.12) == 4  # 3 spot (0.06) + 1 on-demand (0.06)
    assert max_affordable(classes, 2.0, 0.0) == 0
    free = [CapacityClass(name="free", price_per_unit_hour=0.0)]
    assert max_affordable(free, 2.0, 0.0) is None


def test_month_budget_is_spread_over_the_hours_left() -> None:
    assert month_key(NOW) == "2026-03"
    hours = hours_left_in_month(NOW)
    assert hours == pytest.approx(15 * 24 + 12)
    policy = cost_policy(budget_per_hour=None, budget_per_month=100.0)
    assert allowed_spend_per_hour(policy, NOW, spent_this_month=40.0) == pytest.approx(60.0 / hours)
    assert allowed_spend_per_hour(policy, NOW, spent_this_month=150.0) == 0.0
    assert hours_left_in_month(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == pytest.approx(1.0)


def test_apply_budget_caps_and_says_so() -> None:
    check = apply_budget(cost_policy(), 10, 2.0, NOW, 0.0)
    assert (check.replicas, check.capped, check.over_budget) == (4, True, False)
    assert "capped by budget" in check.message
    assert check.cost_per_hour <= 0.12 + 1e-12


def test_budget_below_min_replicas_is_never_silent() -> None:
    capped = apply_budget(cost_policy(), 10, 2.0, NOW, 0.0, min_replicas=6)
    assert capped.replicas == 4
    assert "below min_replicas" in capped.message
    kept = apply_budget(cost_policy(budget_over_min_replicas=False), 10, 2.0, NOW, 0.0, min_replicas=6)
    assert kept.replicas == 6
    assert kept.over_budget
    assert "OVER BUDGET" in kept.message


def test_decide_caps_a_scale_up_with_an_explanation() -> None:
    policies: list[Policy] = [
        TargetTrackingPolicy(
            policy_id="cpu", tenant_id="acme", workload="api", target_utilization=0.5, max_replicas=100
        ),
        cost_policy(),
    ]
    inputs = DecisionInputs(
        tenant_id="acme", workload="api", now=NOW, current_replicas=5, demand_window=[10.0], capacity_per_replica=2.0
    )
    decision, state = decide(inputs, policies)
    assert decision.policies[0].desired == 10
    assert decision.desired_replicas == 4
    assert decision.binding == "budget:budget"
    assert decision.budget[0].capped
    assert "capped by budget" in decision.explanation
    assert decision.cost_per_hour == pytest.approx(0.12)
    assert decision.currency == "EUR"
    assert decision.replicas_by_class == {"spot": 3, "on-demand": 1}
    # The spend accrues in the state: ten hours later 1.2 EUR are spent.
    later = DecisionInputs(
        tenant_id="acme",
        workload="api",
        now=NOW + timedelta(hours=10),
        current_replicas=4,
        demand_window=[10.0],
        capacity_per_replica=2.0,
    )
    decision2, _ = decide(later, policies, state)
    assert decision2.budget[0].spent_this_month == pytest.approx(1.2)
