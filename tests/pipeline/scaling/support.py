"""What the scaling engine tests share: dict-backed tables, an engine on them, samples, a fake cluster."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.events.models import ResourceMetrics, Tier
from pipeline.provisioners.tiers import Quota
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.engine_io import EngineConfig, Outcome, Tables
from pipeline.scaling.fairshare import ResourceVector
from pipeline.scaling.model_host import LearnRequest
from pipeline.scaling.policies import parse_policy
from pipeline.scaling.records import (
    ApplyReport,
    Demand,
    ModelSnapshot,
    Observation,
    PolicyChange,
    PolicySet,
    StoredDecision,
    WorkloadIndex,
    WorkloadScaling,
)
from pipeline.scaling.snapshot_signing import SnapshotSigner
from pipeline.tenants.models import AnomalyLog, QuotaRecord, TenantRecord
from pipeline.typed_table import TypedTable

T0 = datetime(2024, 1, 1, tzinfo=UTC)


WALL = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


HALF_HOUR = 1800.0


SIGNER = SnapshotSigner(b"test-snapshot-signing-key")


def make_tables() -> Tables:
    return Tables(
        policies=TypedTable({}, PolicySet), state=TypedTable({}, WorkloadScaling),
        decisions=TypedTable({}, StoredDecision), index=TypedTable({}, WorkloadIndex),
        snapshots=TypedTable({}, ModelSnapshot), tenants=TypedTable({}, TenantRecord),
        quotas=TypedTable({}, QuotaRecord), anomalies=TypedTable({}, AnomalyLog),
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


def close_window(eng: ScalingEngine, at: datetime, cores: float) -> list[LearnRequest]:
    """One sample that closes the open window, learned by the engine's own host; the requests sent."""
    accumulated = eng.accumulate([sample(at, cores)])
    requests = eng.learn_requests(accumulated.closed)
    eng.finish(accumulated, eng.host.learn(requests))
    return requests


POOL = ResourceVector(cpu=64, memory=1000, gpu=6)


def gpu_demand(tenant_id: str, cpu: float, gpus: float, replicas: int = 4, weight: float = 4.0) -> Demand:
    return Demand(tenant_id=tenant_id, workload="train", replicas=replicas,
                  per_replica=ResourceVector(cpu=cpu, memory=8, gpu=gpus), tier="enterprise", weight=weight,
                  quota=ResourceVector(cpu=32, memory=128, gpu=4), decided_at=T0, sent_at=WALL)
