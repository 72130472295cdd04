from __future__ import annotations

from pipeline.scaling import hpa
from pipeline.scaling.policies import Behavior, RatePolicy, ScalingRules


def test_raw_recommendation_and_tolerance() -> None:
    # 10 replicas of 100 units at 90 % demand, target 70 %: ceil(900 / 70) = 13
    assert hpa.raw_recommendation(900, 100, 10, 0.7, 0.1) == 13
    # within tolerance: 75 % vs 70 % is a ratio of 1.07
    assert hpa.raw_recommendation(750, 100, 10, 0.7, 0.1) == 10
    assert hpa.raw_recommendation(0, 100, 10, 0.7, 0.1) == 0
    assert hpa.raw_recommendation(50, 100, 0, 0.5, 0.1) == 1


def test_scale_down_stabilization_keeps_the_highest_recent_recommendation() -> None:
    behavior = Behavior(
        scale_up=ScalingRules(stabilization_window_seconds=0),
        scale_down=ScalingRules(stabilization_window_seconds=300),
    )
    recs = [(1000.0, 10), (1100.0, 8)]
    value, history = hpa.stabilize(4, 10, 1200.0, recs, behavior)
    assert value == 10  # the 10 from t=1000 is still inside the 300 s window
    assert history[-1] == (1200.0, 4)
    value, _ = hpa.stabilize(4, 10, 1350.0, recs, behavior)
    assert value == 8  # t=1000 left the window, t=1100 did not
    value, _ = hpa.stabilize(4, 10, 1500.0, recs, behavior)
    assert value == 4


def test_scale_up_stabilization_keeps_the_lowest_recent_recommendation() -> None:
    behavior = Behavior(
        scale_up=ScalingRules(stabilization_window_seconds=120),
        scale_down=ScalingRules(stabilization_window_seconds=0),
    )
    value, _ = hpa.stabilize(20, 5, 1000.0, [(950.0, 6)], behavior)
    assert value == 6


def test_rate_limits_follow_hpa_policies() -> None:
    behavior = Behavior(
        scale_up=ScalingRules(
            policies=[
                RatePolicy(type="Pods", value=4, period_seconds=60),
                RatePolicy(type="Percent", value=50, period_seconds=60),
            ],
        ),
        scale_down=ScalingRules(policies=[RatePolicy(type="Pods", value=2, period_seconds=60)]),
    )
    # Max of +4 and +50 % of 10 = 15
    assert hpa.rate_limit(40, 10, 0.0, [], behavior, 0, 100).replicas == 15
    # 3 replicas already added in the period: start = 7, limits 11 and ceil(10.5) = 11
    limited = hpa.rate_limit(40, 10, 100.0, [(90.0, 3)], behavior, 0, 100)
    assert (limited.replicas, limited.reason) == (11, "scale-up rate limit")
    assert hpa.rate_limit(1, 10, 0.0, [], behavior, 0, 100).replicas == 8
    assert hpa.rate_limit(40, 10, 0.0, [], behavior, 0, 12).reason == "max_replicas"
    assert hpa.rate_limit(9, 10, 0.0, [], behavior, 9, 100).replicas == 9


def test_select_policy_min_and_disabled() -> None:
    up = ScalingRules(
        select_policy="Min",
        policies=[
            RatePolicy(type="Pods", value=4, period_seconds=60),
            RatePolicy(type="Percent", value=100, period_seconds=60),
        ],
    )
    behavior = Behavior(scale_up=up, scale_down=ScalingRules(select_policy="Disabled"))
    assert hpa.rate_limit(40, 10, 0.0, [], behavior, 0, 100).replicas == 14
    assert hpa.rate_limit(2, 10, 0.0, [], behavior, 0, 100).replicas == 10


def test_trim_events() -> None:
    assert hpa.trim_events([(0.0, 1), (50.0, 2)], 100.0, 60) == [(50.0, 2)]
