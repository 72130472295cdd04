"""The scaling engine over dict-backed tables: windows, forecasts, snapshots, decisions, fair share, ticks."""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.contract.schema_files import SCHEMA_DIR
from pipeline.contract.topics import SCALING_EVENTS
from pipeline.events.models import ResourceMetrics, Tier
from pipeline.outputs import Refused
from pipeline.provisioners.tiers import Quota
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.engine_io import EngineConfig, Outcome, Tables
from pipeline.scaling.fairshare import ResourceVector, TenantAllocation
from pipeline.scaling.forecast import ForecasterConfig, OnlineForecaster
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.metrics import FORECASTERS_EVICTED, FORECASTERS_LIVE
from pipeline.scaling.model_host import LearnRequest
from pipeline.scaling.policies import parse_policy
from pipeline.scaling.pool import allocate_pool, pool_grants
from pipeline.scaling.records import (
    ApplyReport,
    Demand,
    Grant,
    ModelSnapshot,
    Observation,
    PolicyChange,
    PolicySet,
    ScalingDecisionEvent,
    StoredDecision,
    Tick,
    WorkloadIndex,
    WorkloadScaling,
)
from pipeline.scaling.snapshot_signing import SnapshotSigner
from pipeline.tenants.models import QuotaRecord, TenantRecord, TenantState
from pipeline.typed_table import TypedTable
from pipeline.usage import WindowStats

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WALL = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
HALF_HOUR = 1800.0
SIGNER = SnapshotSigner(b"test-snapshot-signing-key")


def make_tables() -> Tables:
    return Tables(
        policies=TypedTable({}, PolicySet), state=TypedTable({}, WorkloadScaling),
        decisions=TypedTable({}, StoredDecision), index=TypedTable({}, WorkloadIndex),
        snapshots=TypedTable({}, ModelSnapshot), tenants=TypedTable({}, TenantRecord),
        quotas=TypedTable({}, QuotaRecord),
    )


def add_tenant(tables: Tables, tenant_id: str, tier: Tier = Tier.ENTERPRISE, gpus: int = 4) -> None:
    tables.tenants.put(tenant_id, TenantRecord(tenant_id=tenant_id, name=tenant_id, tier=tier, created_at=T0,
                                               updated_at=T0, source_event_id=f"{tenant_id}-created"))
    tables.quotas.put(tenant_id, QuotaRecord(tenant_id=tenant_id, updated_at=T0, updated_by="tier",
                                             limits=Quota(cpu_cores=64, memory_gib=256, gpus=gpus, storage_gib=10)))


def engine(tables: Tables | None = None, **config: Any) -> ScalingEngine:
    tables = tables or make_tables()
    if tables.tenants.get("acme") is None:
        add_tenant(tables, "acme")
    config.setdefault("signer", SIGNER)
    return ScalingEngine(EngineConfig(window_seconds=HALF_HOUR, **config), tables, wall=lambda: WALL)


def put_policy(eng: ScalingEngine, doc: dict[str, Any], tenant_id: str = "acme") -> None:
    policy = parse_policy({"tenant_id": tenant_id, "workload": "api", **doc})
    eng.on_policy_change(PolicyChange(event_id=f"put-{policy.policy_id}", tenant_id=tenant_id, occurred_at=T0,
                                      op="put", policy_id=policy.policy_id, policy=policy))


def sample(at: datetime, cores: float, tenant_id: str = "acme", workload: str = "api") -> ResourceMetrics:
    return ResourceMetrics(event_id=f"{tenant_id}-{workload}-{at.isoformat()}", tenant_id=tenant_id,
                           occurred_at=at, workload=workload, cpu_cores=cores, memory_gib=1.0, gpus=0)


def latest(eng: ScalingEngine) -> StoredDecision:
    """The newest stored decision of acme/api."""
    return eng.recent_decisions("acme", "api")[0]


def observed(replicas: int, cpu: float = 1.0, gpus: float | None = None) -> Observation:
    return Observation(exists=True, replicas=replicas, cpu_per_replica=cpu, gpus_per_replica=gpus, observed_at=WALL)


class FakeCluster:
    """Answers the engine's apply requests like the Kubernetes API would, feeding the reports back."""

    def __init__(self, eng: ScalingEngine, replicas: int = 1, cpu: float = 1.0, gpus: float | None = None) -> None:
        self.eng = eng
        self.replicas: dict[tuple[str, str], int] = {}
        self.default = replicas
        self.cpu = cpu
        self.gpus = gpus
        self.scaled: list[tuple[str, str, int]] = []

    def handle(self, outcome: Outcome | None) -> Outcome:
        merged = Outcome()
        pending = [outcome] if outcome else []
        while pending:
            current = pending.pop()
            merged.emits.extend(current.emits)
            merged.demands.extend(current.demands)
            for request in current.applies:
                key = (request.tenant_id, request.workload)
                before = self.replicas.setdefault(key, self.default)
                if request.replicas is not None and request.replicas != before:
                    self.replicas[key] = request.replicas
                    self.scaled.append((*key, request.replicas))
                report = ApplyReport(
                    tenant_id=request.tenant_id, workload=request.workload, requested_replicas=request.replicas,
                    scaled=request.replicas is not None, previous_replicas=before,
                    observation=observed(self.replicas[key], self.cpu, self.gpus), reported_at=WALL,
                )
                follow = self.eng.on_applied(report)
                if follow:
                    pending.append(follow)
        return merged


def daily(at: datetime) -> float:
    """1 core at night, 8 cores from 08:00 to 18:00."""
    return 8.0 if 8 <= at.hour < 18 else 1.0


def replay(eng: ScalingEngine, start: datetime, end: datetime, load: Callable[[datetime], float],
           cluster: FakeCluster | None = None, step: timedelta = timedelta(minutes=15)) -> list[Outcome]:
    outcomes = []
    at = start
    while at <= end:
        outcome = eng.on_sample(sample(at, load(at)))
        if cluster is not None:
            outcome = cluster.handle(outcome)
        if outcome:
            outcomes.append(outcome)
        at += step
    return outcomes


# -- windows and forecasts -------------------------------------------------------------------------------


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


def test_a_restarted_engine_resumes_the_model_from_its_snapshot_and_the_windows_since() -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=10)
    replay(eng, T0, T0 + timedelta(days=1, hours=3, minutes=15), daily)
    state = tables.state.get("acme/api")
    assert state is not None and state.observations == 54
    assert state.snapshot_observations == 50 and tables.snapshots.get("acme/api") is not None
    reference = eng.host.models["acme/api"].forecast().mean

    restarted = engine(tables, snapshot_every=10)  # a new process: nothing in memory
    model, source, replayed = restarted.host.restore("acme/api", restarted.restore_material("acme/api", state))
    assert (source, replayed, model.observations) == ("snapshot", 4, 54)  # snapshot at 50 + 4 windows since
    assert model.forecast().mean == pytest.approx(reference)

    # The window open at the restart (03:00-03:30) lived in memory only: it is imputed, the lags stay aligned.
    restarted.on_sample(sample(T0 + timedelta(days=1, hours=3, minutes=31), 1.0))
    restarted.on_sample(sample(T0 + timedelta(days=1, hours=4, minutes=1), 1.0))
    after = tables.state.get("acme/api")
    assert after is not None and after.observations == 56 and after.recent[-1][0] == T0 + timedelta(days=1, hours=4)
    assert restarted.stats.restores == {"snapshot": 1}  # the engine did not know what its host held: it restored


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


def test_without_a_snapshot_only_the_recent_windows_can_be_relearned() -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=100)
    replay(eng, T0, T0 + timedelta(hours=12), daily)
    state = tables.state.get("acme/api")
    assert state is not None and state.observations == 24
    restarted = engine(tables, snapshot_every=100)
    model, source, _ = restarted.host.restore("acme/api", restarted.restore_material("acme/api", state))
    assert (source, model.observations) == ("relearned", len(state.recent))


class _WritesAFile:
    """A pickle that, when loaded, creates ``path`` (what a writer of the changelog topic could ship)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def malicious_snapshot(path: Path) -> bytes:
    """A snapshot whose outer layer is well formed and whose inner (full-pickle) layer runs code."""
    outer = pickle.loads(OnlineForecaster(ForecasterConfig(interval_minutes=30.0)).to_snapshot())  # noqa: S301
    outer["models"] = pickle.dumps({"models": _WritesAFile(path)})
    return pickle.dumps(outer)


@pytest.mark.parametrize("signature", [None, "00" * 32, "forged", "signed-by-another-key", "other-workload"])
def test_an_unsigned_or_foreign_snapshot_is_refused_before_unpickling(tmp_path: Path, signature: str | None) -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=4)
    replay(eng, T0, T0 + timedelta(hours=3), daily)
    state = tables.state.get("acme/api")
    assert state is not None and state.snapshot_observations == 4
    pwned = tmp_path / "pwned"
    blob = malicious_snapshot(pwned)
    if signature == "signed-by-another-key":
        signature = SnapshotSigner(b"someone-elses-key-0000").sign("acme/api", blob)
    elif signature == "other-workload":
        signature = SIGNER.sign("acme/other", blob)
    stored = tables.snapshots.get("acme/api")
    assert stored is not None
    tables.snapshots.put("acme/api", stored.model_copy(update={
        "data_b64": base64.b64encode(blob).decode(), "signature": signature}))

    restarted = engine(tables, snapshot_every=4)  # a new process restores from the table
    restarted.on_sample(sample(T0 + timedelta(hours=3, minutes=31), 1.0))
    restarted.on_sample(sample(T0 + timedelta(hours=4, minutes=1), 1.0))  # closes 03:30-04:00: restores
    assert not pwned.exists()  # before the fix the inner pickle ran: the file was created
    assert restarted.stats.snapshots_refused == 1 and restarted.stats.restores == {"relearned": 1}
    model = restarted.host.models["acme/api"]  # started anew from the windows its state keeps
    assert model.observations == len(state.recent) + 2  # + the imputed window open at the restart + 03:30-04:00


def test_the_engines_own_signed_snapshot_is_accepted_and_nothing_is_stored_without_a_key() -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=4)
    replay(eng, T0, T0 + timedelta(hours=3), daily)
    stored = tables.snapshots.get("acme/api")
    assert stored is not None and stored.signature == SIGNER.sign("acme/api", base64.b64decode(stored.data_b64))
    restarted = engine(tables, snapshot_every=4)
    restarted.on_sample(sample(T0 + timedelta(hours=3, minutes=31), 1.0))
    restarted.on_sample(sample(T0 + timedelta(hours=4, minutes=1), 1.0))
    assert restarted.stats.restores == {"snapshot": 1} and restarted.stats.snapshots_refused == 0

    keyless = make_tables()
    unsigned = engine(keyless, snapshot_every=4, signer=None)
    replay(unsigned, T0, T0 + timedelta(hours=3), daily)
    assert keyless.snapshots.get("acme/api") is None and unsigned.stats.snapshots == 0


def test_forecasters_are_capped_per_tenant_and_in_all_least_recently_used_first() -> None:
    tables = make_tables()
    add_tenant(tables, "beta")
    eng = engine(tables, max_models_per_tenant=3, max_models=5)
    before = {reason: FORECASTERS_EVICTED.labels(reason)._value.get() for reason in ("tenant_cap", "global_cap")}
    acme = [f"w{i}" for i in range(6)]
    for step in range(4):  # every acme workload closes a window at each step
        at = T0 + timedelta(minutes=30 * step + 1)
        for workload in acme:
            eng.on_sample(sample(at, 1.0 + step, workload=workload))
        assert len(eng.residency) <= 5 and eng.residency.tenant_count("acme") <= 3
        assert len(eng.host.models) == len(eng.residency)
    assert set(eng.host.models) == {"acme/w3", "acme/w4", "acme/w5"}  # the most recently used
    assert FORECASTERS_EVICTED.labels("tenant_cap")._value.get() > before["tenant_cap"]
    assert FORECASTERS_LIVE._value.get() == 3

    for step in range(4, 6):  # another tenant comes in: the global cap evicts the oldest of all
        at = T0 + timedelta(minutes=30 * step + 1)
        for workload in ("a", "b", "c"):
            eng.on_sample(sample(at, 2.0, tenant_id="beta", workload=workload))
    assert len(eng.host.models) == 5 and eng.residency.tenant_count("beta") == 3
    assert "acme/w3" not in eng.host.models and "acme/w5" in eng.host.models
    assert FORECASTERS_EVICTED.labels("global_cap")._value.get() == before["global_cap"] + 1

    # An evicted workload comes back: its model is restored, never looked up in a host that dropped it.
    at = T0 + timedelta(minutes=30 * 6 + 1)
    eng.on_sample(sample(at, 3.0, workload="w0"))
    eng.on_sample(sample(at + timedelta(minutes=30), 3.0, workload="w0"))
    state = tables.state.get("acme/w0")
    assert state is not None and "acme/w0" in eng.host.models
    assert eng.host.models["acme/w0"].observations == state.observations


def close_window(eng: ScalingEngine, at: datetime, cores: float) -> list[LearnRequest]:
    """One sample that closes the open window, learned by the engine's own host; the requests sent."""
    accumulated = eng.accumulate([sample(at, cores)])
    requests = eng.learn_requests(accumulated.closed)
    eng.finish(accumulated, eng.host.learn(requests))
    return requests


def test_a_request_carries_the_restore_material_only_when_the_host_may_lack_the_model() -> None:
    eng = engine()
    eng.accumulate([sample(T0, 1.0)])
    first = close_window(eng, T0 + timedelta(minutes=30), 2.0)
    assert len(first) == 1 and first[0].restore is not None and first[0].restore.observations == 0
    assert first[0].value == 1.0 and first[0].end == T0 + timedelta(minutes=30)
    assert close_window(eng, T0 + timedelta(minutes=60), 2.0)[0].restore is None
    eng.models_lost()  # the child process died
    third = close_window(eng, T0 + timedelta(minutes=90), 2.0)
    assert third[0].restore is not None and third[0].restore.observations == 2
    assert [value for _, value in third[0].restore.recent] == [1.0, 2.0]
    state = eng.tables.state.get("acme/api")
    assert state is not None and state.observations == 3 and eng.stats.restores == {"new": 1, "relearned": 1}


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


# -- applying -----------------------------------------------------------------------------------------------


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


# -- fair share -----------------------------------------------------------------------------------------------


POOL = ResourceVector(cpu=64, memory=1000, gpu=6)


def gpu_demand(tenant_id: str, cpu: float, gpus: float, replicas: int = 4, weight: float = 4.0) -> Demand:
    return Demand(tenant_id=tenant_id, workload="train", replicas=replicas,
                  per_replica=ResourceVector(cpu=cpu, memory=8, gpu=gpus), tier="enterprise", weight=weight,
                  quota=ResourceVector(cpu=32, memory=128, gpu=4), decided_at=T0, sent_at=WALL)


def test_the_pool_gives_three_tenants_their_drf_shares_of_too_few_gpus() -> None:
    demands = {f"{d.tenant_id}/train": d for d in
               (gpu_demand("a", 4, 1), gpu_demand("b", 1, 1), gpu_demand("c", 1, 2))}
    allocation = allocate_pool(POOL, demands, WALL, 600)
    granted = {key: a.granted for key, a in allocation.allocations.items()}
    assert granted == {"a/train": 2, "b/train": 2, "c/train": 1}  # equal dominant (GPU) shares of 1/3
    assert {a.limited_by for a in allocation.allocations.values()} == {"capacity"}


def test_stale_demands_leave_the_pool_and_a_tenants_workloads_share_its_weight_and_quota() -> None:
    stale = gpu_demand("old", 1, 1).model_copy(update={"sent_at": WALL - timedelta(hours=2)})
    two = [gpu_demand("a", 1, 1).model_copy(update={"workload": w}) for w in ("w1", "w2")]
    demands = {"old/train": stale, "a/w1": two[0], "a/w2": two[1], "b/train": gpu_demand("b", 1, 1)}
    allocation = allocate_pool(ResourceVector(cpu=64, memory=1000, gpu=4), demands, WALL, 600)
    assert allocation.expired == ["old/train"]
    assert allocation.allocations["a/w1"].weight == 2.0 and allocation.allocations["b/train"].weight == 4.0
    a_total = allocation.allocations["a/w1"].granted + allocation.allocations["a/w2"].granted
    assert a_total == allocation.allocations["b/train"].granted == 2  # a tenant, not a workload, gets a share
    roomy = allocate_pool(ResourceVector(cpu=64, memory=1000, gpu=100), demands, WALL, 600).allocations
    assert roomy["a/w1"].granted + roomy["a/w2"].granted == 4  # the tenant's quota (4 GPUs) covers both
    assert roomy["b/train"].granted == 4 and roomy["a/w2"].limited_by == "quota"


def test_pool_grants_answer_the_asking_workload_and_every_workload_whose_grant_changed() -> None:
    table: TypedTable[Demand] = TypedTable({}, Demand)
    first = pool_grants(POOL, table, gpu_demand("a", 4, 1), WALL, 600)
    assert [(g.tenant_id, g.allocation.granted) for g in first] == [("a", 4)]
    second = pool_grants(POOL, table, gpu_demand("b", 1, 1), WALL, 600)
    assert sorted((g.tenant_id, g.allocation.granted) for g in second) == [("a", 3), ("b", 3)]
    third = pool_grants(POOL, table, gpu_demand("b", 1, 1), WALL, 600)
    assert [(g.tenant_id, g.allocation.granted) for g in third] == [("b", 3)]  # a's grant did not change


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


# -- schedules and policy changes ----------------------------------------------------------------------------


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


def test_the_pool_drops_a_demand_overtaken_by_a_newer_one() -> None:
    table: TypedTable[Demand] = TypedTable({}, Demand)
    newer = gpu_demand("a", 1, 1)
    older = gpu_demand("a", 1, 0).model_copy(update={"sent_at": WALL - timedelta(seconds=1), "replicas": 9})
    assert pool_grants(POOL, table, newer, WALL, 600)
    assert pool_grants(POOL, table, older, WALL, 600) == []
    assert table.get("a/train") is not None and table.get("a/train").per_replica.gpu == 1  # type: ignore[union-attr]


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
