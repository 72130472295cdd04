from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.scaling.decide import decide
from pipeline.scaling.decision_models import DecisionInputs, ScalingDecision, ScalingState
from pipeline.scaling.fairshare import ResourceVector, TenantDemand, drf_allocate
from pipeline.scaling.forecast import Forecast
from pipeline.scaling.policies import (
    Behavior,
    PredictivePolicy,
    RatePolicy,
    ScalingRules,
    TargetTrackingPolicy,
)

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def tt(**kw: object) -> TargetTrackingPolicy:
    doc = {
        "policy_id": "cpu",
        "tenant_id": "acme",
        "workload": "api",
        "target_utilization": 0.5,
        "max_replicas": 100,
        **kw,
    }
    return TargetTrackingPolicy.model_validate(doc)


def pred(**kw: object) -> PredictivePolicy:
    doc = {
        "policy_id": "fc",
        "tenant_id": "acme",
        "workload": "api",
        "lead_steps": 1,
        "target_utilization": 1.0,
        "quantile": 0.9,
        "scale_in_quantile": 0.9,
        "min_residuals": 0,
        "max_replicas": 100,
        **kw,
    }
    return PredictivePolicy.model_validate(doc)


FORECAST = Forecast(
    observations=1000,
    interval_minutes=5,
    mean=(900.0, 1100.0),
    quantiles={0.1: (800.0, 1000.0), 0.9: (1000.0, 1200.0)},
    residuals_seen=(100, 100),
)


def inputs(current: int = 4, demand: float = 200.0, **kw: object) -> DecisionInputs:
    values: dict[str, object] = {
        "tenant_id": "acme",
        "workload": "api",
        "now": NOW,
        "current_replicas": current,
        "demand_window": [demand],
        "capacity_per_replica": 100.0,
        "forecast": FORECAST,
        **kw,
    }
    return DecisionInputs(**values)  # type: ignore[arg-type]


def test_maximum_of_desired_values_wins_and_is_explained() -> None:
    decision, _ = decide(inputs(), [tt(), pred()])
    by_id = {p.policy_id: p for p in decision.policies}
    assert by_id["cpu"].desired == 4
    assert by_id["fc"].desired == 12  # q0.9 of step 2 = 1200 at 100 per replica
    assert decision.desired_replicas == 12
    assert decision.action == "scale_up"
    assert decision.binding == "policy:fc"
    assert decision.forecast is not None and decision.forecast.quantiles["0.9"] == [1000.0, 1200.0]
    assert "predictive fc: 12" in decision.explanation


def test_override_policy_wins_over_larger_values() -> None:
    decision, _ = decide(inputs(), [tt(combine="override"), pred()])
    assert decision.desired_replicas == 4
    assert decision.binding == "policy:cpu"
    capped, _ = decide(inputs(current=20, demand=5000.0), [tt(combine="override", max_replicas=30), pred()])
    assert capped.policies[0].desired == 40  # raw 100, rate limit 100 % of 20; before the bounds
    assert (capped.desired_replicas, capped.binding) == (30, "max_replicas")


def test_forecast_only_policy_is_explained_but_not_applied() -> None:
    decision, _ = decide(inputs(), [tt(), pred(forecast_only=True)])
    assert decision.desired_replicas == 4
    fc = next(p for p in decision.policies if p.policy_id == "fc")
    assert fc.desired == 12 and not fc.active
    assert "forecast-only" in fc.reason


def test_bounds_no_policies_and_other_tenants_policies() -> None:
    decision, _ = decide(inputs(demand=10.0), [tt(min_replicas=3)])
    assert (decision.desired_replicas, decision.min_replicas, decision.binding) == (3, 3, "min_replicas")
    # a forecast-only policy neither acts nor bounds
    decision, _ = decide(inputs(demand=10.0), [tt(), pred(forecast_only=True, min_replicas=7)])
    assert (decision.desired_replicas, decision.min_replicas) == (1, 0)
    decision, _ = decide(inputs(), [])
    assert (decision.desired_replicas, decision.binding, decision.action) == (4, "hold", "hold")
    other = tt(tenant_id="other")
    decision, _ = decide(inputs(), [other])
    assert decision.policies == []


def test_rate_limits_use_the_state_across_decisions() -> None:
    behavior = Behavior(
        scale_up=ScalingRules(policies=[RatePolicy(type="Pods", value=2, period_seconds=600)]),
        scale_down=ScalingRules(stabilization_window_seconds=0),
    )
    policies = [tt(behavior=behavior.model_dump())]
    first, state = decide(inputs(current=2, demand=1000.0, forecast=None), policies)
    assert first.desired_replicas == 4
    assert state.scale_events == [(NOW.timestamp(), 2)]
    second, state = decide(
        inputs(current=4, demand=1000.0, forecast=None, now=NOW + timedelta(seconds=60)), policies, state
    )
    assert second.desired_replicas == 4  # the 2 pods added 60 s ago use up this period's allowance
    assert "rate limit" in second.policies[0].reason
    third, _ = decide(
        inputs(current=4, demand=1000.0, forecast=None, now=NOW + timedelta(seconds=700)), policies, state
    )
    assert third.desired_replicas == 6


def test_fair_share_grant_caps_the_decision() -> None:
    per = ResourceVector(cpu=1, memory=2, gpu=1)
    allocation = drf_allocate(
        ResourceVector(cpu=100, memory=100, gpu=6),
        [
            TenantDemand(tenant_id="acme", per_replica=per, replicas=12),
            TenantDemand(tenant_id="beta", per_replica=per, replicas=12),
        ],
    ).grant("acme")
    decision, _ = decide(inputs(fair_share=allocation), [tt(), pred()])
    assert decision.desired_replicas == 3
    assert decision.binding == "fair_share"
    assert decision.fair_share is not None and decision.fair_share.capped
    assert "fair share: granted 3 of 12" in decision.explanation


def test_decision_and_state_are_json_round_trippable() -> None:
    decision, state = decide(inputs(), [tt(), pred()])
    assert ScalingDecision.model_validate_json(decision.model_dump_json()) == decision
    assert ScalingState.model_validate_json(state.model_dump_json()) == state


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(inputs(now=datetime(2026, 1, 1)), [tt()])
    with pytest.raises(ValueError, match="capacity_per_replica"):
        decide(inputs(capacity_per_replica=0.0), [tt()])


def test_predictive_abstains_without_forecast() -> None:
    decision, _ = decide(inputs(forecast=None), [pred()])
    assert decision.binding == "hold"
    assert decision.policies[0].desired is None
