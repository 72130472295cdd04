"""What a scaling decision is: the state kept between decisions, the inputs, the explained decision.

:func:`pipeline.scaling.decide.decide` makes a :class:`ScalingDecision` from :class:`DecisionInputs` and the
previous :class:`ScalingState`; all of them are plain data (JSON-serialisable) and stored by the engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.scaling.cost import BudgetCheck
from pipeline.scaling.fairshare import TenantAllocation
from pipeline.scaling.forecast import Forecast
from pipeline.scaling.requests import QuotaRoom, RequestInput

Detail = float | int | str | bool | None

#: ``max_replicas`` when no policy bounds the count.
UNBOUNDED = 1_000_000


# --------------------------------------------------------------------------- state
class CostState(BaseModel):
    """Spend of one cost-aware policy in the current UTC month, integrated over decisions."""

    month: str
    spent: float = 0.0
    cost_per_hour: float = 0.0
    since: datetime


class ScalingState(BaseModel):
    """Per-workload memory of the decision loop; store it (JSON) between decisions."""

    tenant_id: str
    workload: str
    last_decision_at: datetime | None = None
    desired_replicas: int | None = None
    scale_events: list[tuple[float, int]] = Field(default_factory=list)
    """(epoch seconds, signed replica change) of recent changes, for the HPA rate limits."""
    recommendations: dict[str, list[tuple[float, int]]] = Field(default_factory=dict)
    """Per target-tracking (or stabilized predictive) policy: (epoch seconds, recommendation) within
    its stabilization window."""
    cost: dict[str, CostState] = Field(default_factory=dict)


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class DecisionInputs:
    tenant_id: str
    workload: str
    now: datetime
    """Decision time (timezone-aware); the only clock the decision sees."""
    current_replicas: int
    demand_window: Sequence[float]
    """Recent demand per window, oldest first, in capacity units (e.g. CPU cores in use). With a
    utilization metric, pass ``utilization * ready_replicas * capacity_per_replica``."""
    capacity_per_replica: float
    ready_replicas: int | None = None
    forecast: Forecast | None = None
    fair_share: TenantAllocation | None = None
    spent_this_month: dict[str, float] | None = None
    """Actual spend per cost-aware policy id this month (billing data); default: the state's integral."""
    demand_aggregation: Literal["last", "mean", "max"] = "last"
    request: RequestInput | None = None
    """A scaling request: its count replaces the policies' combined value (bounds, budgets, quota and fair
    share still apply)."""
    quota: QuotaRoom | None = None
    """The replicas the tenant's quota leaves room for: caps a scale-up (never forces a scale-down)."""
    quarantined: bool = False
    """The workload is quarantined (a critical anomaly, until an admin releases it): held at its policy floor
    (``min_replicas``), never scaled up."""
    over_quota: Sequence[str] = ()
    """The compute resources (``cpu_cores``, ``memory_gib``, ``gpus``) the tenant is marked over quota for: no
    scale-up while any is marked (a scale-down still goes)."""


# --------------------------------------------------------------------------- outputs
class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)


class PolicyEvaluation(_Out):
    policy_id: str
    kind: str
    active: bool
    """True when the value took part in the combination."""
    desired: int | None
    reason: str
    details: dict[str, Detail] = Field(default_factory=dict)


class ForecastSummary(_Out):
    observations: int
    interval_minutes: float
    mean: list[float]
    quantiles: dict[str, list[float]]
    residuals_seen: list[int]

    @classmethod
    def from_forecast(cls, forecast: Forecast) -> ForecastSummary:
        return cls(
            observations=forecast.observations,
            interval_minutes=forecast.interval_minutes,
            mean=list(forecast.mean),
            quantiles={f"{q:g}": list(v) for q, v in sorted(forecast.quantiles.items())},
            residuals_seen=list(forecast.residuals_seen),
        )


class BudgetSummary(_Out):
    policy_id: str
    currency: str
    requested: int
    replicas: int
    capped: bool
    over_budget: bool
    allowed_per_hour: float | None
    cost_per_hour: float
    replicas_by_class: dict[str, int]
    affordable_replicas: int | None
    spent_this_month: float
    month_remaining: float | None
    message: str

    @classmethod
    def from_check(cls, check: BudgetCheck) -> BudgetSummary:
        return cls(
            policy_id=check.policy_id,
            currency=check.currency,
            requested=check.requested,
            replicas=check.replicas,
            capped=check.capped,
            over_budget=check.over_budget,
            allowed_per_hour=None if math.isinf(check.allowed_per_hour) else check.allowed_per_hour,
            cost_per_hour=check.cost_per_hour,
            replicas_by_class=check.replicas_by_class,
            affordable_replicas=check.affordable_replicas,
            spent_this_month=check.spent_this_month,
            month_remaining=check.month_remaining,
            message=check.message,
        )


class FairShareSummary(_Out):
    requested: int
    granted: int
    capped: bool
    dominant_resource: str | None
    dominant_share: float
    weighted_share: float
    weight: float
    limited_by: str


class ScalingDecision(_Out):
    tenant_id: str
    workload: str
    at: datetime
    current_replicas: int
    ready_replicas: int | None
    desired_replicas: int
    action: Literal["scale_up", "scale_down", "hold"]
    demand: float | None
    demand_aggregation: str
    capacity_per_replica: float
    utilization: float | None
    """Demand / (current replicas * capacity per replica) at decision time."""
    forecast: ForecastSummary | None
    policies: list[PolicyEvaluation]
    combined_replicas: int
    """The combined desired value before bounds, budgets and fair share."""
    min_replicas: int
    max_replicas: int
    bounds_source: str
    binding: str
    """What set the final value: ``policy:<id>``, ``schedule:<id>``, ``min_replicas``,
    ``max_replicas``, ``budget:<id>``, ``quota``, ``fair_share``, ``request`` (a scaling request's count)
    or ``hold`` (no policy gave a value)."""
    budget: list[BudgetSummary]
    fair_share: FairShareSummary | None
    cost_per_hour: float | None
    currency: str | None
    replicas_by_class: dict[str, int]
    explanation: str
