"""Cost monitoring (pipeline/compute/costs.py) and budget alerts (pipeline/compute/budget_alerts.py): pure."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.compute import budget_alerts
from pipeline.compute.costs import (
    MAX_BUDGET_FRACTION,
    TenantCosts,
    budget_fraction,
    crossed_thresholds,
    period_bounds,
    split,
    tenant_costs,
)
from pipeline.compute.lifecycle import ComputeRecord, ComputeState, tenant_usage, transition
from pipeline.compute.optimizer import choose
from pipeline.compute.request import ComputeRequest
from pipeline.config import Settings, parse_thresholds
from tests.pipeline.compute.test_lifecycle import OFFER, REQUEST, T0, running

H = timedelta(hours=1)


def finished(at: datetime, ran: timedelta, request_id: str = "f1") -> ComputeRecord:
    record = running(at, request_id)
    record = transition(record, ComputeState.TERMINATING, at + ran, reason="user")
    return transition(record, ComputeState.TERMINATED, at + ran)


def reserved(created: datetime, start: datetime, request_id: str = "res1") -> ComputeRecord:
    request = REQUEST.model_copy(update={"start_at": start})
    record = ComputeRecord.new(request_id, request, created)
    return record.model_copy(update={"decision": choose(request, [OFFER], now=created)})


def test_running_allocation_splits_into_spent_and_committed() -> None:
    record = running()  # 10 $/h for 6 h
    assert split(record, T0) == (0.0, 60.0)
    assert split(record, T0 + 2 * H) == pytest.approx((20.0, 40.0))
    assert split(record, T0 + 9 * H) == pytest.approx((60.0, 0.0))  # capped at the duration
    done = finished(T0, 90 * timedelta(minutes=1))
    assert split(done, T0 + 5 * H) == pytest.approx((15.0, 0.0))


def test_spent_plus_committed_is_what_the_budget_check_counts_and_reservations_are_committed() -> None:
    records = [running(T0, "r1"), finished(T0, 2 * H, "r2"), reserved(T0, T0 + 48 * H, "r3")]
    now = T0 + 3 * H
    costs = tenant_costs(records, "acme", now, budget_usd=200.0, period="month")
    assert costs.spent_usd == pytest.approx(30.0 + 20.0)
    assert costs.committed_usd == pytest.approx(30.0 + 60.0)  # 3 h left of r1, r3's whole reservation
    usage = tenant_usage(records, "acme", now)  # the optimizer's figure leaves the reservation out
    assert costs.spent_usd + costs.committed_usd == pytest.approx(usage.spent_usd + 60.0)
    assert costs.fraction == pytest.approx(140.0 / 200.0)
    assert costs.allocations == 2 and costs.running_usd_per_hour == 10.0
    assert tenant_costs(records, "globex", now, budget_usd=None, period="month").spent_usd == 0.0


def test_forecast_renews_running_allocations_until_the_period_ends() -> None:
    now = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)  # 12 h before June
    record = running(now - H)  # ends at now + 5 h: renewed for the 7 h after that
    costs = tenant_costs([record], "acme", now, budget_usd=None, period="month")
    assert costs.period_start == datetime(2026, 5, 1, tzinfo=UTC)
    assert costs.period_end == datetime(2026, 6, 1, tzinfo=UTC)
    assert costs.forecast_usd == pytest.approx(60.0 + 70.0)
    total = tenant_costs([record], "acme", now, budget_usd=None, period="total")
    assert total.period_end is None and total.forecast_usd == pytest.approx(60.0)
    assert costs.fraction is None


def test_period_bounds_and_naive_times() -> None:
    assert period_bounds("month", datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period_bounds("total", T0) == (None, None)
    with pytest.raises(ValueError):
        period_bounds("month", datetime(2026, 5, 1))
    with pytest.raises(ValueError):
        tenant_costs([], "acme", datetime(2026, 5, 1), budget_usd=None, period="month")


def test_budget_fraction() -> None:
    assert budget_fraction(5.0, None) is None
    assert budget_fraction(0.0, 0.0) == 0.0 and budget_fraction(0.01, 0.0) == 1.0
    assert budget_fraction(50.0, 200.0) == 0.25
    assert budget_fraction(1.0, 5e-324) == 1e6  # a sub-cent budget: capped, still finite
    assert crossed_thresholds(0.85, (1.0, 0.5, 0.8)) == [0.5, 0.8]
    assert crossed_thresholds(None, (0.5,)) == []


# -- properties --------------------------------------------------------------------------------------------------

durations = st.floats(min_value=0.25, max_value=200.0, allow_nan=False)
prices = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)
offsets = st.floats(min_value=-400.0, max_value=400.0, allow_nan=False)


@st.composite
def allocations(draw: st.DrawFn) -> list[ComputeRecord]:
    """A fixed set of the tenant's allocations: running (some already started, some later), finished, reserved."""
    out: list[ComputeRecord] = []
    for i in range(draw(st.integers(min_value=0, max_value=5))):
        hours = draw(durations)
        start = T0 + timedelta(hours=draw(offsets))
        request = ComputeRequest.model_validate({**REQUEST.model_dump(), "duration_hours": hours})
        record = ComputeRecord.new(f"r{i}", request, start)
        kind = draw(st.sampled_from(["running", "finished", "reserved"]))
        if kind == "reserved":
            later = request.model_copy(update={"start_at": start + H})
            out.append(ComputeRecord.new(f"r{i}", later, start).model_copy(
                update={"decision": choose(later, [OFFER], now=start)}))
            continue
        record = transition(record, ComputeState.ALLOCATING, start)
        record = transition(record, ComputeState.PROVISIONING, start, offer=OFFER, allocation_id=f"a{i}",
                            price_per_hour=draw(prices))
        record = transition(record, ComputeState.RUNNING, start)
        if kind == "finished":
            end = start + timedelta(hours=draw(st.floats(min_value=0.0, max_value=hours)))
            record = transition(record, ComputeState.TERMINATING, end)
            record = transition(record, ComputeState.TERMINATED, end)
        out.append(record)
    return out


def _finite_non_negative(costs: TenantCosts) -> None:
    for value in (costs.spent_usd, costs.committed_usd, costs.forecast_usd, costs.running_usd_per_hour):
        assert math.isfinite(value) and value >= 0
    assert costs.fraction is None or (math.isfinite(costs.fraction) and costs.fraction >= 0)


@settings(max_examples=150, deadline=None)
@given(allocations(), offsets, st.floats(min_value=0.0, max_value=500.0, allow_nan=False),
       st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6, allow_nan=False)),
       st.sampled_from(["month", "total"]))
def test_spend_grows_with_time_and_spent_plus_committed_never_falls(
    records: list[ComputeRecord], at: float, later: float, budget: float | None, period: str,
) -> None:
    """For a fixed set of allocations: spent and spent + committed never decrease as time passes, the forecast
    is at least spent + committed, every figure is finite and non-negative, and the fraction is their ratio."""
    now = T0 + timedelta(hours=at)
    then = now + timedelta(hours=later)
    first = tenant_costs(records, "acme", now, budget_usd=budget, period=period)  # type: ignore[arg-type]
    second = tenant_costs(records, "acme", then, budget_usd=budget, period=period)  # type: ignore[arg-type]
    for costs in (first, second):
        _finite_non_negative(costs)
        assert costs.forecast_usd >= costs.used_usd - 1e-6
        if budget is not None and budget > 0:
            assert costs.fraction == pytest.approx(min(costs.used_usd / budget, MAX_BUDGET_FRACTION))
    assert second.spent_usd >= first.spent_usd - 1e-6
    assert second.used_usd >= first.used_usd - 1e-6


# -- budget alerts ---------------------------------------------------------------------------------------------


def _costs(fraction: float, now: datetime = T0) -> TenantCosts:
    return tenant_costs([running(now - H)], "acme", now, budget_usd=60.0 / fraction, period="month")


def test_each_threshold_is_announced_once_per_period() -> None:
    thresholds = (0.5, 0.8, 1.0)
    half = _costs(0.55)
    assert budget_alerts.due(half, None, thresholds) == [0.5]
    state = budget_alerts.recorded(half, None, [0.5])
    assert budget_alerts.due(half, state, thresholds) == []  # a redelivery sends nothing again
    over = _costs(1.2)
    assert budget_alerts.due(over, state, thresholds) == [0.8, 1.0]
    state = budget_alerts.recorded(over, state, [0.8, 1.0])
    assert state.crossed == [0.5, 0.8, 1.0]
    next_month = _costs(0.6, datetime(2026, 6, 2, tzinfo=UTC))
    assert budget_alerts.due(next_month, state, thresholds) == [0.5]  # a new period starts afresh
    assert budget_alerts.recorded(next_month, state, [0.5]).crossed == [0.5]


def test_alert_event_ids_are_deterministic_per_tenant_period_and_threshold() -> None:
    event = budget_alerts.alert_event(_costs(0.55), 0.5)
    again = budget_alerts.alert_event(_costs(0.7, T0 + H), 0.5)
    assert event.event_id == again.event_id  # same tenant, period and threshold: a duplicate
    assert event.event_id != budget_alerts.alert_event(_costs(0.9), 0.8).event_id
    other_month = budget_alerts.alert_event(_costs(0.55, datetime(2026, 6, 2, tzinfo=UTC)), 0.5)
    assert event.event_id != other_month.event_id
    assert (event.kind, event.status, event.tenant_id) == ("budget-alert", "crossed", "acme")
    assert event.detail["threshold"] == 0.5 and event.detail["currency"] == "USD"
    assert event.detail["fraction"] == pytest.approx(0.55)


def test_threshold_setting_is_validated() -> None:
    assert Settings().budget_alert_thresholds == (0.5, 0.8, 1.0)
    assert parse_thresholds(" 1.0, 0.25 ") == (0.25, 1.0)
    assert parse_thresholds("") == ()
    for bad in ("0", "-0.5", "nan", "inf", "11", "abc", "0.5,0.5", ",".join(["0.1"] * 11)):
        with pytest.raises(ValueError):
            parse_thresholds(bad)
    with pytest.raises(ValueError):
        Settings(compute_budget_alert_thresholds="0.5,x")
