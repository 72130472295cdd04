from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.scaling.decide import decide
from pipeline.scaling.decision_models import DecisionInputs
from pipeline.scaling.policies import Policy, ScheduledPolicy, ScheduleWindow, TargetTrackingPolicy
from pipeline.scaling.schedule import active_windows, last_fire, schedule_effect

BERLIN = ZoneInfo("Europe/Berlin")


def business_hours(**overrides: object) -> ScheduledPolicy:
    window = {
        "name": "office",
        "cron": "0 9 * * 1-5",
        "timezone": "Europe/Berlin",
        "duration_minutes": 600,
        "min_replicas": 8,
        **overrides,
    }
    return ScheduledPolicy(
        policy_id="office", tenant_id="acme", workload="api", windows=[ScheduleWindow.model_validate(window)]
    )


def test_window_active_exactly_at_cron_time_and_not_before_or_after() -> None:
    policy = business_hours()
    monday_9 = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
    assert [w.name for w in active_windows(policy, monday_9)] == ["office"]
    assert active_windows(policy, datetime(2026, 3, 2, 8, 59, 59, tzinfo=BERLIN)) == []
    assert active_windows(policy, datetime(2026, 3, 2, 19, 0, tzinfo=BERLIN)) == []
    assert active_windows(policy, datetime(2026, 3, 7, 10, 0, tzinfo=BERLIN)) == []  # Saturday
    # the same instant expressed in UTC
    assert active_windows(policy, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))


def test_daylight_saving_time_follows_the_zone() -> None:
    window = business_hours().windows[0]
    # After the 2026-03-29 switch, 09:00 Berlin is 07:00 UTC.
    fired = last_fire(window, datetime(2026, 3, 30, 7, 0, tzinfo=UTC))
    assert fired.astimezone(UTC) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        active_windows(business_hours(), datetime(2026, 3, 2, 9, 0))


def test_effect_combines_windows() -> None:
    a = business_hours(max_replicas=20)
    b = ScheduledPolicy(
        policy_id="sale",
        tenant_id="acme",
        workload="api",
        windows=[
            ScheduleWindow(
                cron="30 9 2 3 *", timezone="Europe/Berlin", duration_minutes=30, desired_replicas=12, min_replicas=10
            )
        ],
    )
    effect = schedule_effect([a, b], datetime(2026, 3, 2, 9, 45, tzinfo=BERLIN))
    assert (effect.min_replicas, effect.max_replicas, effect.desired_replicas) == (10, 20, 12)
    assert len(effect.active) == 2


def test_decide_changes_replicas_at_cron_time_with_injected_clock() -> None:
    policies: list[Policy] = [
        TargetTrackingPolicy(
            policy_id="cpu", tenant_id="acme", workload="api", target_utilization=0.7, min_replicas=1, max_replicas=50
        ),
        business_hours(),
    ]

    def at(clock: datetime) -> int:
        inputs = DecisionInputs(
            tenant_id="acme",
            workload="api",
            now=clock,
            current_replicas=2,
            demand_window=[100.0],
            capacity_per_replica=100.0,
        )
        decision, _ = decide(inputs, policies)
        return decision.desired_replicas

    assert at(datetime(2026, 3, 2, 8, 59, tzinfo=BERLIN)) == 2
    assert at(datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)) == 8
    inputs = DecisionInputs(
        tenant_id="acme",
        workload="api",
        now=datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN),
        current_replicas=2,
        demand_window=[100.0],
        capacity_per_replica=100.0,
    )
    decision, _ = decide(inputs, policies)
    assert decision.binding == "min_replicas"
    assert decision.bounds_source == "schedule:office"
    assert "office" in decision.explanation


def test_window_max_lets_target_tracking_go_above_its_own_max() -> None:
    sale = ScheduledPolicy(
        policy_id="sale",
        tenant_id="acme",
        workload="api",
        windows=[ScheduleWindow(cron="0 12 * * *", timezone="UTC", duration_minutes=60, max_replicas=40)],
    )
    cpu = TargetTrackingPolicy(
        policy_id="cpu", tenant_id="acme", workload="api", target_utilization=0.5, max_replicas=10
    )
    policies: list[Policy] = [cpu, sale]

    def at(hour: int) -> int:
        inputs = DecisionInputs(
            tenant_id="acme",
            workload="api",
            now=datetime(2026, 3, 2, hour, 0, tzinfo=UTC),
            current_replicas=16,
            demand_window=[1500.0],
            capacity_per_replica=100.0,
        )
        return decide(inputs, policies)[0].desired_replicas

    assert at(11) == 10
    assert at(12) == 30
