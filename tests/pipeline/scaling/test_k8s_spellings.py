"""Scaling policies accept the field names of Kubernetes HPA v2 and KEDA objects: a document spelt with any mix
of snake_case and those names is the same policy as its snake_case spelling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.scaling.policies import K8S_ALIASES, parse_policy

COUNTS = st.integers(0, 1000)
IDS = st.sampled_from(["api", "worker-1", "db.main"])


@st.composite
def rate_policy(draw: st.DrawFn) -> dict[str, Any]:
    return {"type": draw(st.sampled_from(["Pods", "Percent"])), "value": draw(st.integers(1, 100)),
            "period_seconds": draw(st.integers(1, 1800))}


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["stabilization_window_seconds"] = draw(st.integers(0, 3600))
    if draw(st.booleans()):
        document["select_policy"] = draw(st.sampled_from(["Max", "Min", "Disabled"]))
    if draw(st.booleans()):
        document["policies"] = draw(st.lists(rate_policy(), max_size=3))
    return document


@st.composite
def bounds(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(COUNTS)
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["min_replicas"] = low
    document["max_replicas"] = low + draw(COUNTS)
    return document


@st.composite
def target_tracking(draw: st.DrawFn) -> dict[str, Any]:
    document = {"policy_id": draw(IDS), "tenant_id": "acme", "workload": draw(IDS), "kind": "target_tracking",
                "target_utilization": draw(st.integers(1, 200)) / 100, **draw(bounds())}
    behavior: dict[str, Any] = {}
    for direction in ("scale_up", "scale_down"):
        if draw(st.booleans()):
            behavior[direction] = draw(rules())
    if behavior or draw(st.booleans()):
        document["behavior"] = behavior
    return document


@st.composite
def predictive(draw: st.DrawFn) -> dict[str, Any]:
    document = {"policy_id": draw(IDS), "tenant_id": "acme", "workload": draw(IDS), "kind": "predictive",
                "lead_steps": draw(st.integers(0, 5)), **draw(bounds())}
    if draw(st.booleans()):
        document["target_utilization"] = draw(st.integers(1, 200)) / 100
    return document


@st.composite
def scheduled(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(COUNTS)
    window = {"cron": "0 8 * * 1-5", "duration_minutes": draw(st.integers(1, 600)), "min_replicas": low,
              "max_replicas": low + draw(COUNTS), "desired_replicas": low}
    return {"policy_id": "office-hours", "tenant_id": "acme", "workload": "api", "kind": "scheduled",
            "windows": [window], **draw(bounds())}


POLICIES = st.one_of(target_tracking(), predictive(), scheduled())


@st.composite
def respelt(draw: st.DrawFn, node: Any) -> Any:
    """``node`` with each field that has Kubernetes spellings under one of its names, drawn independently
    (and target_utilization, where it is a whole percentage, sometimes as the HPA's averageUtilization)."""
    if isinstance(node, list):
        return [draw(respelt(item)) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "target_utilization" and draw(st.booleans()):
            out["averageUtilization"] = round(value * 100)
            continue
        name = draw(st.sampled_from((key, *K8S_ALIASES.get(key, ()))))
        out[name] = draw(respelt(value))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_kubernetes_spellings_give_the_same_policy_as_snake_case(data: st.DataObject) -> None:
    snake = data.draw(POLICIES, label="snake_case")
    mixed = data.draw(respelt(snake), label="respelt")
    expected = parse_policy(json.dumps(snake), strict=True)
    assert parse_policy(json.dumps(mixed), strict=True) == expected
    assert parse_policy(mixed) == expected
    # stored and shown in snake_case: the dump reads back as itself
    assert parse_policy(expected.model_dump(mode="json"), strict=True) == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200))
def test_average_utilization_is_the_hpa_percentage(percent: int) -> None:
    base = {"policy_id": "cpu", "tenant_id": "acme", "workload": "api", "kind": "target_tracking"}
    policy = parse_policy(json.dumps({**base, "averageUtilization": percent}), strict=True)
    assert policy.kind == "target_tracking" and policy.target_utilization == percent / 100


HPA_BEHAVIOR = {  # pasted from an HPA v2 manifest (spec.minReplicas, spec.maxReplicas, spec.behavior)
    "minReplicas": 2,
    "maxReplicas": 30,
    "behavior": {
        "scaleDown": {"stabilizationWindowSeconds": 120, "policies": [{"type": "Percent", "value": 50,
                                                                       "periodSeconds": 60}]},
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]},
    },
}


def test_an_hpa_manifest_pasted_as_is_reads_as_snake_case() -> None:
    document = {"policy_id": "cpu", "tenant_id": "acme", "workload": "api", "kind": "target_tracking",
                "averageUtilization": 70, **HPA_BEHAVIOR}
    dumped = parse_policy(json.dumps(document), strict=True).model_dump(mode="json")
    assert (dumped["min_replicas"], dumped["max_replicas"], dumped["target_utilization"]) == (2, 30, 0.7)
    assert dumped["behavior"]["scale_down"] == {
        "stabilization_window_seconds": 120, "select_policy": "Max",
        "policies": [{"type": "Percent", "value": 50, "period_seconds": 60}]}
    assert dumped["behavior"]["scale_up"]["policies"][0] == {"type": "Pods", "value": 4, "period_seconds": 15}


def test_keda_replica_counts_and_cron_desired_replicas() -> None:
    document = {"policy_id": "office", "tenant_id": "acme", "workload": "api", "kind": "scheduled",
                "minReplicaCount": 1, "maxReplicaCount": 12,
                "windows": [{"cron": "0 8 * * 1-5", "duration_minutes": 600, "desiredReplicas": 6}]}
    policy = parse_policy(json.dumps(document), strict=True)
    assert policy.kind == "scheduled" and (policy.min_replicas, policy.max_replicas) == (1, 12)
    assert policy.windows[0].desired_replicas == 6


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"cooldownPeriod": 300}, r"cooldownPeriod \(KEDA\) has no equivalent"),
        ({"pollingInterval": 30}, r"pollingInterval \(KEDA\) has no equivalent"),
        ({"idleReplicaCount": 0}, r"idleReplicaCount \(KEDA\) has no equivalent"),
        ({"averageUtilization": 0.7}, "whole percentage"),
        ({"averageUtilization": 250}, "whole percentage"),
        ({"averageUtilization": True}, "whole percentage"),
        ({"averageUtilization": 70, "targetUtilization": 0.7}, "not both"),
        ({"minReplicas": 3, "min_replicas": 3}, "Extra inputs are not permitted"),
        ({"minReplicas": 3, "minReplicaCount": 3}, "Extra inputs are not permitted"),
    ],
)
def test_unmapped_or_doubled_spellings_are_refused_with_a_reason(extra: dict[str, Any], reason: str) -> None:
    document = {"policy_id": "cpu", "tenant_id": "acme", "workload": "api", "kind": "target_tracking", **extra}
    if not any(key in extra for key in ("averageUtilization", "targetUtilization")):
        document["target_utilization"] = 0.7
    with pytest.raises(ValidationError, match=reason):
        parse_policy(json.dumps(document), strict=True)
