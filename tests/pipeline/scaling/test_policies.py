from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.scaling.policies import (
    CostAwarePolicy,
    PredictivePolicy,
    ScheduledPolicy,
    TargetTrackingPolicy,
    parse_policies,
    parse_policy,
    policy_json_schema,
)

BASE: dict[str, Any] = {"policy_id": "p1", "tenant_id": "acme", "workload": "api"}


def test_each_kind_parses_with_defaults() -> None:
    tt = parse_policy({**BASE, "kind": "target_tracking", "target_utilization": 0.6})
    assert isinstance(tt, TargetTrackingPolicy)
    assert tt.tolerance == 0.1
    assert tt.behavior.scale_down.stabilization_window_seconds == 300
    assert [p.type for p in tt.behavior.scale_up.policies] == ["Percent", "Pods"]

    pred = parse_policy({**BASE, "kind": "predictive", "lead_steps": 2})
    assert isinstance(pred, PredictivePolicy)
    assert pred.effective_horizon == 3
    assert pred.effective_scale_in_quantile == pytest.approx(0.9 ** (1 / 3), abs=1e-4)

    sched = parse_policy(
        {
            **BASE,
            "kind": "scheduled",
            "windows": [
                {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "duration_minutes": 60, "min_replicas": 5}
            ],
        }
    )
    assert isinstance(sched, ScheduledPolicy)

    cost = parse_policy(
        {
            **BASE,
            "kind": "cost_aware",
            "budget_per_hour": 10,
            "capacity_classes": [{"name": "spot", "price_per_unit_hour": 0.01}],
        }
    )
    assert isinstance(cost, CostAwarePolicy)


def test_json_text_and_lists_parse_and_round_trip() -> None:
    doc = {**BASE, "kind": "target_tracking", "target_utilization": 0.5}
    policy = parse_policy(json.dumps(doc))
    assert parse_policy(policy.model_dump_json()) == policy
    both = parse_policies([doc, {**doc, "policy_id": "p2", "kind": "predictive"}])
    assert [p.kind for p in both] == ["target_tracking", "predictive"]
    assert "discriminator" in json.dumps(policy_json_schema())


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**BASE, "kind": "elastic"}, "tag"),
        ({**BASE, "kind": "target_tracking"}, "target_utilization"),
        ({**BASE, "kind": "target_tracking", "target_utilization": 0}, "greater than 0"),
        (
            {**BASE, "kind": "target_tracking", "target_utilization": 0.5, "min_replicas": 5, "max_replicas": 2},
            "min_replicas",
        ),
        ({**BASE, "kind": "target_tracking", "target_utilization": 0.5, "surprise": 1}, "Extra inputs"),
        ({**BASE, "policy_id": "bad id!", "kind": "target_tracking", "target_utilization": 0.5}, "pattern"),
        ({**BASE, "kind": "predictive", "lead_steps": 3, "horizon_steps": 2}, "horizon_steps"),
        ({**BASE, "kind": "predictive", "quantile": 1.0}, "less than 1"),
        ({**BASE, "kind": "scheduled", "windows": []}, "at least 1"),
        (
            {
                **BASE,
                "kind": "scheduled",
                "windows": [{"cron": "0 25 * * *", "duration_minutes": 5, "min_replicas": 1}],
            },
            "cron",
        ),
        (
            {
                **BASE,
                "kind": "scheduled",
                "windows": [
                    {"cron": "0 9 * * *", "timezone": "Mars/Olympus", "duration_minutes": 5, "min_replicas": 1}
                ],
            },
            "time zone",
        ),
        ({**BASE, "kind": "scheduled", "windows": [{"cron": "0 9 * * *", "duration_minutes": 5}]}, "must set"),
        ({**BASE, "kind": "cost_aware", "capacity_classes": [{"name": "a", "price_per_unit_hour": 1}]}, "budget"),
        (
            {
                **BASE,
                "kind": "cost_aware",
                "budget_per_hour": 1,
                "capacity_classes": [{"name": "a", "price_per_unit_hour": 1}, {"name": "a", "price_per_unit_hour": 2}],
            },
            "unique",
        ),
    ],
)
def test_bad_documents_are_rejected(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_policy(doc)
