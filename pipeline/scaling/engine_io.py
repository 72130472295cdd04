"""What the scaling engine is given and what it gives back: its configuration (from the settings), its tables,
and the :class:`Outcome` of each call (records to emit, Kubernetes calls, demands for the fair-share pool)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.config import Settings
from pipeline.outputs import Emit
from pipeline.scaling.fairshare import ResourceVector
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.pool import UNLIMITED
from pipeline.scaling.records import Demand, ModelSnapshot, PolicySet, StoredDecision, WorkloadIndex, WorkloadScaling
from pipeline.scaling.snapshot_signing import SnapshotSigner, signer_of
from pipeline.tenants.models import AnomalyLog, QuotaRecord, TenantRecord
from pipeline.typed_table import TypedTable
from pipeline.usage import WindowStats


@dataclass(frozen=True)
class EngineConfig:
    window_seconds: float
    forecast_enabled: bool = True
    horizon: int = 12
    snapshot_every: int = 30
    recent_decisions: int = 50
    default_capacity_per_replica: float = 1.0
    apply_enabled: bool = True
    apply_off_reason: str = "applying is off (SCALING_APPLY_ENABLED=false)"
    """Why a decision is not applied while ``apply_enabled`` is false (shown with the decision)."""
    observe_interval_seconds: float = 300.0
    pool: ResourceVector | None = None
    """The fair-share pool; None: no fair sharing."""
    tier_weights: dict[str, float] = field(default_factory=dict)
    demand_ttl_seconds: float = 1800.0
    demand_windows: int = 3
    """Closed windows passed to ``decide`` as ``demand_window`` (it reads the last one)."""
    signer: SnapshotSigner | None = None
    """Signs the snapshots stored and verifies those read; None: no snapshot is written or read."""
    max_models_per_tenant: int = 200
    max_models: int = 5000
    """Forecasters held in memory per tenant and in all (least recently used evicted)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        pool = None
        limits = (settings.scaling_pool_cpu, settings.scaling_pool_memory_gib, settings.scaling_pool_gpus)
        if any(v is not None for v in limits):
            pool = ResourceVector.from_tuple([UNLIMITED if v is None else v for v in limits])
        return cls(
            window_seconds=float(settings.utilization_window_seconds),
            forecast_enabled=settings.scaling_forecast_enabled,
            horizon=settings.scaling_forecast_horizon,
            snapshot_every=settings.scaling_snapshot_every_windows,
            recent_decisions=settings.scaling_recent_decisions,
            default_capacity_per_replica=settings.scaling_default_capacity_per_replica,
            # Without Kubernetes there is no Deployment to read or scale: decisions are recorded, advisory.
            apply_enabled=settings.scaling_apply_enabled and settings.kubernetes_enabled,
            apply_off_reason=(
                "applying is off (SCALING_APPLY_ENABLED=false)" if not settings.scaling_apply_enabled
                else "applying is off (KUBERNETES_ENABLED=false)"
            ),
            observe_interval_seconds=settings.scaling_observe_interval_seconds,
            pool=pool,
            tier_weights=dict(settings.scaling_tier_weights),
            demand_ttl_seconds=settings.scaling_demand_ttl_seconds,
            signer=signer_of(settings),
            max_models_per_tenant=settings.scaling_max_workloads_per_tenant,
            max_models=settings.scaling_max_models,
        )

    @property
    def keep_windows(self) -> int:
        return max(self.snapshot_every + 2, self.demand_windows)


@dataclass
class Tables:
    policies: TypedTable[PolicySet]
    state: TypedTable[WorkloadScaling]
    decisions: TypedTable[StoredDecision]
    """``tenant/workload/slot``: a ring of the workload's most recent decisions."""
    index: TypedTable[WorkloadIndex]
    snapshots: TypedTable[ModelSnapshot]
    tenants: TypedTable[TenantRecord]
    quotas: TypedTable[QuotaRecord]
    anomalies: TypedTable[AnomalyLog] | None = None
    """The tenant's anomaly log: a workload in its ``quarantined`` list is held at its policy floor."""
    windows: Callable[[str, datetime], WindowStats | None] | None = None
    """The utilization window of ``tenant/workload`` starting at a time, as stored: where the open window
    resumes from in a new process (None: the open window starts empty)."""


@dataclass
class Outcome:
    """What the agent does after a call: emit records, ask the Kubernetes API, send demands to the pool."""

    emits: list[Emit] = field(default_factory=list)
    applies: list[ApplyRequest] = field(default_factory=list)
    demands: list[Demand] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.emits or self.applies or self.demands)

    def extend(self, other: Outcome) -> None:
        """Append ``other``'s effects after this one's (the order they are carried out in)."""
        self.emits += other.emits
        self.applies += other.applies
        self.demands += other.demands
