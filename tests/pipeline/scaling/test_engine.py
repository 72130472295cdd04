"""The scaling engine over dict-backed tables: windows, forecasts, schedules, policy changes, grants, ticks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contract.schema_files import SCHEMA_DIR
from pipeline.contract.topics import SCALING_EVENTS
from pipeline.events.models import ResourceMetrics
from pipeline.outputs import Refused
from pipeline.scaling.policies import parse_policy
from pipeline.scaling.pool import pool_grants
from pipeline.scaling.records import Demand, PolicyChange, ScalingDecisionEvent, Tick, WorkloadIndex, WorkloadScaling
from pipeline.tenants.models import TenantState
from pipeline.typed_table import TypedTable
from pipeline.usage import WindowStats, fold_samples
from tests.pipeline.scaling.support import (
    HALF_HOUR,
    POOL,
    T0,
    WALL,
    FakeCluster,
    close_window,
    daily,
    engine,
    latest,
    make_tables,
    put_policy,
    replay,
    sample,
)


def test_samples_accumulate_and_the_next_window_closes_the_previous_one() -> None:
    eng = engine()
    assert eng.on_sample(sample(T0 + timedelta(minutes=1), 2.0)) is None  # no policy: no Deployment to observe
    assert eng.on_sample(sample(T0 + timedelta(minutes=20), 4.0)) is None
    assert eng.tables.state.get("acme/api") is None  # nothing closed yet
    eng.on_sample(sample(T0 + timedelta(minutes=31), 1.0))
    state = eng.tables.state.get("acme/api")
    assert state is not None and state.recent == [(T0 + timedelta(minutes=30), 3.0)]  # the mean of the window
    assert state.observations == 1 and state.forecast is not None and len(state.forecast.mean) == 12
    assert eng.recent_decisions("acme") == []  # no policy: forecasts only
    assert eng.tables.index.get("acme") == WorkloadIndex(tenant_id="acme", workloads=["api"])


def test_late_samples_are_skipped_and_unknown_tenants_are_not_forecast() -> None:
    eng = engine()
    eng.on_sample(sample(T0 + timedelta(minutes=40), 2.0))
    assert eng.on_sample(sample(T0 + timedelta(minutes=5), 9.0)) is None
    assert eng.stats.late == 1
    eng.on_sample(sample(T0, 1.0, tenant_id="ghost"))
    eng.on_sample(sample(T0 + timedelta(hours=1), 1.0, tenant_id="ghost"))
    assert eng.tables.state.get("ghost/api") is None


def test_the_forecast_band_follows_a_daily_pattern_and_a_predictive_policy_scales_before_the_ramp() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "pred", "kind": "predictive", "lead_steps": 2, "horizon_steps": 3,
                     "target_utilization": 0.8, "min_replicas": 1})
    cluster = FakeCluster(eng)
    replay(eng, T0, T0 + timedelta(days=4, hours=6, minutes=45), daily, cluster)
    before = cluster.replicas[("acme", "api")]
    assert before == 2  # night: ceil(1 / 0.8)
    outcomes = replay(eng, T0 + timedelta(days=4, hours=7), T0 + timedelta(days=4, hours=7), daily, cluster)
    decision = latest(eng)
    assert decision.decision.at == T0 + timedelta(days=4, hours=7)
    assert decision.decision.demand == 1.0  # the load is still at its night level...
    assert decision.decision.desired_replicas >= 10 and decision.applied  # ...but 08:00 needs 8 / 0.8 replicas
    assert cluster.replicas[("acme", "api")] == decision.decision.desired_replicas
    forecast = decision.decision.forecast
    assert forecast is not None and set(forecast.quantiles) >= {"0.1", "0.9"}
    assert forecast.quantiles["0.9"][2] >= forecast.mean[2] >= forecast.quantiles["0.1"][2]
    events = [e.value for o in outcomes for e in o.emits if e.topic == SCALING_EVENTS]
    assert isinstance(events[-1], ScalingDecisionEvent) and events[-1].status == "accepted"
    # What leaves the service matches its committed schema (scaling-events carries this and scaling commands).
    schema = json.loads((SCHEMA_DIR / f"{SCALING_EVENTS}.v1.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(events[-1].model_dump_json()))


def test_a_new_engine_resumes_the_open_window_from_the_stored_utilization_window() -> None:
    stored = WindowStats()
    for minute, cores in ((1, 1.0), (5, 2.0)):  # folded (and written) before the restart
        stored.add(sample(T0 + timedelta(minutes=minute), cores))
    tables = replace(make_tables(), windows=lambda key, start: stored if (key, start) == ("acme/api", T0) else None)
    eng = engine(tables)

    eng.on_sample(sample(T0 + timedelta(minutes=20), 6.0))
    eng.on_sample(sample(T0 + timedelta(minutes=31), 1.0))  # closes 00:00-00:30

    state = tables.state.get("acme/api")
    assert state is not None and state.recent == [(T0 + timedelta(minutes=30), 3.0)]  # (1 + 2 + 6) / 3, not 6


class CountingDict(dict[str, Any]):
    """A table backend that counts its writes."""

    writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_a_batch_that_closes_several_windows_of_a_workload_writes_its_state_once() -> None:
    tables = make_tables()
    state = CountingDict()
    tables.state = TypedTable(state, WorkloadScaling)
    eng = engine(tables)
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    accumulated = eng.accumulate([sample(T0 + timedelta(minutes=30 * i), 1.0 + i) for i in range(4)])
    assert len(accumulated.closed) == 3
    eng.finish(accumulated, eng.host.learn(eng.learn_requests(accumulated.closed)))
    stored = tables.state.get("acme/api")
    assert state.writes == 1 and stored is not None
    assert stored.recent == [(T0 + timedelta(minutes=30 * (i + 1)), 1.0 + i) for i in range(3)]
    assert stored.observations == 3 and stored.decisions == 3
    assert [d.seq for d in eng.recent_decisions("acme", "api")] == [2, 1, 0]


def test_windows_closed_before_a_rebalance_are_not_recorded_after_it() -> None:
    eng = engine()
    eng.accumulate([sample(T0, 1.0)])
    accumulated = eng.accumulate([sample(T0 + timedelta(minutes=30), 2.0)])
    results = eng.host.learn(eng.learn_requests(accumulated.closed))
    eng.forget()  # partitions revoked while the forecasts were being made
    assert not eng.finish(accumulated, results)
    assert eng.tables.state.get("acme/api") is None
    # the host learned a window the state does not have: the next request restores the model
    eng.accumulate([sample(T0 + timedelta(minutes=31), 2.0)])
    assert close_window(eng, T0 + timedelta(minutes=61), 2.0)[0].restore is not None


def test_a_window_whose_forecast_failed_is_decided_without_one() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    eng.accumulate([sample(T0, 3.0)])
    accumulated = eng.accumulate([sample(T0 + timedelta(minutes=30), 1.0)])
    assert len(eng.learn_requests(accumulated.closed)) == 1
    eng.finish(accumulated, [])  # the forecaster process failed
    state = eng.tables.state.get("acme/api")
    assert state is not None and state.observations == 0 and state.forecast is None
    assert state.recent == [(T0 + timedelta(minutes=30), 3.0)]
    decision = latest(eng)
    assert decision.decision.forecast is None and decision.decision.demand == 3.0


def test_forecasting_off_still_decides_reactively() -> None:
    eng = engine(forecast_enabled=False)
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    cluster = FakeCluster(eng)
    replay(eng, T0, T0 + timedelta(hours=1), lambda _: 3.0, cluster)
    decision = latest(eng)
    assert decision.decision.forecast is None and decision.model is None
    assert cluster.replicas[("acme", "api")] == 6
    assert eng.host.models == {} and eng.learn_requests([]) == []


def test_a_scheduled_policy_changes_replicas_at_its_cron_time() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "morning", "kind": "scheduled", "windows": [
        {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris", "duration_minutes": 60, "desired_replicas": 5}]})
    assert eng.tick_tenants() == ["acme"]
    cluster = FakeCluster(eng)
    monday = datetime(2026, 5, 4, 6, 59, tzinfo=UTC)  # 08:59 in Paris
    cluster.handle(eng.on_tick(Tick(tenant_id="acme", at=monday)))  # observes the Deployment first
    cluster.handle(eng.on_tick(Tick(tenant_id="acme", at=monday)))
    before = latest(eng)
    assert before.decision.desired_replicas == 1 and before.decision.policies[0].reason == "no window active"
    cluster.handle(eng.on_tick(Tick(tenant_id="acme", at=monday + timedelta(seconds=30))))
    assert len(eng.recent_decisions("acme")) == 1  # nothing changed
    cluster.handle(eng.on_tick(Tick(tenant_id="acme", at=monday + timedelta(minutes=1))))
    after = latest(eng)
    assert after.decision.at == datetime(2026, 5, 4, 7, 0, tzinfo=UTC) and after.decision.desired_replicas == 5
    assert after.decision.binding == "schedule:morning" and after.applied
    assert cluster.replicas[("acme", "api")] == 5


def test_policy_changes_are_checked_again_by_the_owner() -> None:
    eng = engine()
    policy = parse_policy({"policy_id": "p", "tenant_id": "acme", "workload": "api", "kind": "target_tracking",
                           "target_utilization": 0.5})
    with pytest.raises(Refused):
        eng.on_policy_change(PolicyChange(event_id="x", tenant_id="acme", occurred_at=T0, op="put",
                                          policy_id="other", policy=policy))
    with pytest.raises(Refused):
        eng.on_policy_change(PolicyChange(event_id="y", tenant_id="ghost", occurred_at=T0, op="put",
                                          policy_id="p", policy=policy))
    eng.on_policy_change(PolicyChange(event_id="z", tenant_id="acme", occurred_at=T0, op="put", policy_id="p",
                                      policy=policy))
    eng.on_policy_change(PolicyChange(event_id="w", tenant_id="acme", occurred_at=T0, op="delete", policy_id="p"))
    assert eng.tables.policies.get("acme").policies == {}  # type: ignore[union-attr]


def test_a_deleted_tenant_is_no_longer_decided_for() -> None:
    eng = engine()
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    record = eng.tables.tenants.get("acme")
    assert record is not None
    eng.tables.tenants.put("acme", record.model_copy(update={"state": TenantState.DELETED}))
    replay(eng, T0, T0 + timedelta(hours=2), lambda _: 3.0)
    assert eng.recent_decisions("acme") == []


def test_grants_answering_a_replaced_demand_are_ignored() -> None:
    eng = engine(pool=POOL, tier_weights={"enterprise": 4.0})
    put_policy(eng, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5})
    cluster = FakeCluster(eng, cpu=1.0, gpus=1.0)
    sent = [d for o in replay(eng, T0, T0 + timedelta(hours=1), lambda _: 2.0, cluster) for d in o.demands]
    assert [d.seq for d in sent] == list(range(1, len(sent) + 1)) and len(sent) >= 2
    table: TypedTable[Demand] = TypedTable({}, Demand)
    stale = pool_grants(POOL, table, sent[0], WALL, 600)[0]
    assert stale.demand_seq == 1 and not eng.on_grant(stale)
    assert eng.tables.state.get("acme/api").grant is None  # type: ignore[union-attr]
    fresh = pool_grants(POOL, table, sent[-1], WALL, 600)[0]
    assert cluster.handle(eng.on_grant(fresh)).emits  # the answer to the latest demand re-makes the decision
    assert cluster.replicas[("acme", "api")] == 4


def _open_windows(eng: Any) -> dict[str, tuple[float, int, float, int | None]]:
    return {key: (w.start, w.count, w.cpu_sum, w.replicas) for key, w in eng.open.items()}


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(-40, 300), st.floats(0, 64), st.sampled_from(["api", "web"])),
                                 max_size=12), min_size=1, max_size=4))
def test_samples_placed_by_the_utilization_fold_accumulate_as_samples_placed_by_the_engine(
    batches: list[list[tuple[int, float, str]]],
) -> None:
    by_itself, from_fold = engine(), engine()
    for offset, batch in enumerate(batches):
        samples = [ResourceMetrics(event_id=f"e{offset}-{i}", tenant_id="acme", workload=workload, cpu_cores=cores,
                                   occurred_at=T0 + timedelta(minutes=minutes), memory_gib=1.0, gpus=0, replicas=i)
                   for i, (minutes, cores, workload) in enumerate(batch)]
        folded = fold_samples(samples, None, lambda _key, _start: None, timedelta(seconds=HALF_HOUR))
        expected = by_itself.accumulate(folded.fresh)
        got = from_fold.accumulate(folded.fresh, folded.placed, folded.window_seconds)
        assert got.closed == expected.closed and got.outcome == expected.outcome
        assert _open_windows(from_fold) == _open_windows(by_itself)
    assert from_fold.stats == by_itself.stats  # the same samples, the same late ones


def test_placements_of_another_window_size_are_not_used() -> None:
    eng = engine()
    first = sample(T0, 1.0)
    eng.accumulate([first], [("acme/api", T0.timestamp() + 60)], placed_window=60.0)  # not this engine's size
    assert eng.open["acme/api"].start == T0.timestamp()
