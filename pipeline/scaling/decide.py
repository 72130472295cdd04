"""One scaling decision, with its explanation, from plain inputs.

:func:`decide` is pure: the clock, the forecast, the policies, the fair-share grant and the previous
:class:`ScalingState` are all passed in; it returns the :class:`ScalingDecision` (JSON-serialisable,
stored with the decision) and the new state (JSON-serialisable, stored in a table by the caller).

Order of evaluation:

1. each enabled policy of the workload gives its desired value (target tracking through the HPA
   algorithm with its stabilization windows and rate limits; predictive from the forecast band;
   scheduled windows from the cron schedule at ``now``); forecast-only policies are explained but
   ignored;
2. combination: the maximum of the desired values, or the maximum of the ``combine="override"`` ones
   when there are any; no desired value at all holds the current count;
3. bounds: ``[max(min_replicas), min(max_replicas)]`` of the enabled policies that are neither
   scheduled nor forecast-only, replaced by the active scheduled windows' ``min_replicas`` /
   ``max_replicas`` when they set them;
4. budgets: each enabled cost-aware policy caps the count to what it pays for (said so in
   ``binding`` and ``explanation``; never silently over budget);
5. quota (when given: scaling requests): a scale-up is capped at the replicas the tenant's quota leaves
   room for (``binding: quota``);
6. fair share: the tenant's DRF grant caps the count.

A scaling request (``DecisionInputs.request``) takes the place of step 2: its count is the combined value
(``binding: request``), the policies are still evaluated and explained but not combined, and steps 3 to 6
cap it; the explanation says what the request asked for and what capped it.

Fair sharing is a two-pass affair for the caller: decide for every tenant without a grant, run
:func:`pipeline.scaling.fairshare.drf_allocate` over the desired counts, decide again with each
tenant's grant (from the same input state) and store the second result.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.scaling import hpa
from pipeline.scaling.cost import BudgetCheck, accrue, apply_budget, month_key, ordered_classes, place
from pipeline.scaling.fairshare import TenantAllocation
from pipeline.scaling.forecast import Forecast
from pipeline.scaling.policies import (
    Behavior,
    CostAwarePolicy,
    Policy,
    PredictivePolicy,
    ScalingRules,
    ScheduledPolicy,
    TargetTrackingPolicy,
)
from pipeline.scaling.predictive import predictive_desired
from pipeline.scaling.requests import QuotaRoom, RequestInput
from pipeline.scaling.schedule import schedule_effect

logger = logging.getLogger(__name__)

Detail = float | int | str | bool | None


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


# --------------------------------------------------------------------------- outputs
class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


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


_UNBOUNDED = 1_000_000


def _aggregate(values: Sequence[float], how: str) -> float | None:
    clean = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return None
    if how == "mean":
        return statistics.fmean(clean)
    if how == "max":
        return max(clean)
    return clean[-1]


def _epoch(now: datetime) -> float:
    return now.timestamp()


def decide(
    inputs: DecisionInputs,
    policies: Sequence[Policy],
    state: ScalingState | None = None,
) -> tuple[ScalingDecision, ScalingState]:
    """Decide the replica count of one workload; return the decision and the new state."""
    now = inputs.now
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("decide() needs a timezone-aware 'now'")
    if inputs.capacity_per_replica <= 0:
        raise ValueError("capacity_per_replica must be positive")
    if inputs.current_replicas < 0:
        raise ValueError("current_replicas must be >= 0")
    now = now.astimezone(UTC)
    t = _epoch(now)
    if state is None:
        state = ScalingState(tenant_id=inputs.tenant_id, workload=inputs.workload)
    current = inputs.current_replicas
    cpr = inputs.capacity_per_replica
    demand = _aggregate(inputs.demand_window, inputs.demand_aggregation)
    utilization = None if demand is None or current == 0 else demand / (current * cpr)

    mine = [p for p in policies if p.enabled and p.tenant_id == inputs.tenant_id and p.workload == inputs.workload]
    evaluations: list[PolicyEvaluation] = []
    candidates: list[tuple[str, int, bool]] = []  # (source, desired, override)
    ids = {p.policy_id for p in mine}
    new_recs = {pid: list(recs) for pid, recs in state.recommendations.items() if pid in ids}

    # Bounds from the non-scheduled policies.
    bounded = [
        p
        for p in mine
        if not isinstance(p, ScheduledPolicy) and not (isinstance(p, PredictivePolicy) and p.forecast_only)
    ]
    lo = max((p.min_replicas for p in bounded), default=0)
    hi = min((p.max_replicas for p in bounded), default=_UNBOUNDED)
    bounds_source = "policies" if bounded else "none"
    if lo > hi:
        logger.warning(
            "policies of %s/%s have min_replicas %d > max_replicas %d", inputs.tenant_id, inputs.workload, lo, hi
        )
        hi = lo
        bounds_source = "policies (min_replicas above max_replicas: max raised to min)"

    # Scheduled windows.
    scheduled = [p for p in mine if isinstance(p, ScheduledPolicy)]
    if scheduled:
        effect = schedule_effect(scheduled, now)
        active_ids = {a.policy_id for a in effect.active}
        for sp in scheduled:
            windows = [a for a in effect.active if a.policy_id == sp.policy_id]
            if windows:
                names = ", ".join(f"{a.name} ({a.window.cron} {a.window.timezone})" for a in windows)
                desired_vals = [a.window.desired_replicas for a in windows if a.window.desired_replicas is not None]
                evaluations.append(
                    PolicyEvaluation(
                        policy_id=sp.policy_id,
                        kind=sp.kind,
                        active=bool(desired_vals),
                        desired=max(desired_vals) if desired_vals else None,
                        reason=f"active window(s): {names}",
                        details={
                            "window_min_replicas": max(
                                (a.window.min_replicas for a in windows if a.window.min_replicas is not None),
                                default=None,
                            ),
                            "window_max_replicas": max(
                                (a.window.max_replicas for a in windows if a.window.max_replicas is not None),
                                default=None,
                            ),
                            "window_ends_at": min(a.ends_at for a in windows).isoformat(),
                        },
                    )
                )
                if desired_vals:
                    candidates.append((f"schedule:{sp.policy_id}", max(desired_vals), sp.combine == "override"))
            else:
                evaluations.append(
                    PolicyEvaluation(
                        policy_id=sp.policy_id, kind=sp.kind, active=False, desired=None, reason="no window active"
                    )
                )
        if effect.min_replicas is not None or effect.max_replicas is not None:
            if effect.min_replicas is not None:
                lo = effect.min_replicas
            if effect.max_replicas is not None:
                hi = effect.max_replicas
            if lo > hi:
                hi = lo
            bounds_source = "schedule:" + ",".join(sorted(active_ids))

    # Target tracking.
    for p in mine:
        if isinstance(p, TargetTrackingPolicy):
            if demand is None:
                evaluations.append(
                    PolicyEvaluation(
                        policy_id=p.policy_id, kind=p.kind, active=False, desired=None, reason="no demand observed"
                    )
                )
                continue
            raw = hpa.raw_recommendation(demand, cpr, current, p.target_utilization, p.tolerance)
            stabilized, history = hpa.stabilize(raw, current, t, state.recommendations.get(p.policy_id, []), p.behavior)
            new_recs[p.policy_id] = history
            # Bounds are applied once, after the combination, so that the binding names them.
            limited = hpa.rate_limit(stabilized, current, t, state.scale_events, p.behavior, 0, _UNBOUNDED)
            reason = f"demand {demand:.4g} at target {p.target_utilization:g} x {cpr:g} per replica -> {raw}"
            if stabilized != raw:
                reason += f"; stabilized to {stabilized}"
            if limited.limited:
                reason += f"; {limited.reason} -> {limited.replicas}"
            evaluations.append(
                PolicyEvaluation(
                    policy_id=p.policy_id,
                    kind=p.kind,
                    active=True,
                    desired=limited.replicas,
                    reason=reason,
                    details={"raw": raw, "stabilized": stabilized, "utilization": utilization},
                )
            )
            candidates.append((f"policy:{p.policy_id}", limited.replicas, p.combine == "override"))
        elif isinstance(p, PredictivePolicy):
            result = predictive_desired(p, inputs.forecast, current, cpr, (0, _UNBOUNDED))
            desired_p = result.desired
            reason = result.reason
            if desired_p is not None and p.scale_in_stabilization_seconds > 0:
                stabilized, history = hpa.stabilize(
                    desired_p,
                    current,
                    t,
                    state.recommendations.get(p.policy_id, []),
                    _scale_in_window(p.scale_in_stabilization_seconds),
                )
                new_recs[p.policy_id] = history
                if stabilized != desired_p:
                    reason += f"; scale-in stabilized to {stabilized}"
                desired_p = stabilized
            acts = desired_p is not None and not p.forecast_only
            reason += " (forecast-only: not applied)" if p.forecast_only else ""
            evaluations.append(
                PolicyEvaluation(
                    policy_id=p.policy_id,
                    kind=p.kind,
                    active=acts,
                    desired=desired_p,
                    reason=reason,
                    details=dict(result.details),
                )
            )
            if acts and desired_p is not None:
                candidates.append((f"policy:{p.policy_id}", desired_p, p.combine == "override"))

    # Combination (a scaling request replaces it: the policies are explained, not combined).
    overriding = [c for c in candidates if c[2]]
    pool = overriding or candidates
    request = inputs.request
    if request is not None:
        evaluations = [
            ev if ev.kind == "cost_aware" or not ev.active
            else ev.model_copy(update={"active": False, "reason": ev.reason + "; a scaling request sets the count"})
            for ev in evaluations
        ]
        evaluations.append(PolicyEvaluation(
            policy_id=request.event_id, kind="request", active=True, desired=request.target,
            reason=request.asked + (f": {request.reason}" if request.reason else ""),
        ))
        combined, binding = request.target, "request"
    elif pool:
        source, combined, _ = max(pool, key=lambda c: c[1])
        binding = source
    else:
        source, combined = "hold", current
        binding = "hold"
    desired = combined
    if desired < lo:
        desired, binding = lo, "min_replicas"
    elif desired > hi:
        desired, binding = hi, "max_replicas"

    # Budgets.
    budget_summaries: list[BudgetSummary] = []
    cost_policies = [p for p in mine if isinstance(p, CostAwarePolicy)]
    new_cost: dict[str, CostState] = {}
    spent_by_policy: dict[str, float] = {}
    for p in cost_policies:
        spent = _spent(p.policy_id, state, inputs, now)
        spent_by_policy[p.policy_id] = spent
        check = apply_budget(p, desired, cpr, now, spent, lo)
        if check.capped or check.replicas != desired:
            binding = f"budget:{p.policy_id}"
        desired = check.replicas
        budget_summaries.append(BudgetSummary.from_check(check))
        evaluations.append(
            PolicyEvaluation(
                policy_id=p.policy_id,
                kind=p.kind,
                active=check.capped,
                desired=check.affordable_replicas,
                reason=check.message,
                details={
                    "allowed_per_hour": None if math.isinf(check.allowed_per_hour) else check.allowed_per_hour,
                    "spent_this_month": spent,
                },
            )
        )

    # Quota (scale-ups only).
    quota_capped: QuotaRoom | None = None
    if inputs.quota is not None and desired > max(current, inputs.quota.replicas):
        desired, binding, quota_capped = max(current, inputs.quota.replicas), "quota", inputs.quota

    # Fair share.
    fair: FairShareSummary | None = None
    if inputs.fair_share is not None:
        grant = inputs.fair_share
        capped = desired > grant.granted
        fair = FairShareSummary(
            requested=grant.requested,
            granted=grant.granted,
            capped=capped,
            dominant_resource=grant.dominant_resource,
            dominant_share=grant.dominant_share,
            weighted_share=grant.weighted_share,
            weight=grant.weight,
            limited_by=grant.limited_by,
        )
        if capped:
            desired = grant.granted
            binding = "fair_share"

    # Cost of the final count (first cost policy's classes and prices).
    cost_per_hour: float | None = None
    currency: str | None = None
    by_class: dict[str, int] = {}
    if cost_policies:
        first = cost_policies[0]
        placement = place(desired, ordered_classes(first), cpr)
        cost_per_hour, currency, by_class = placement.cost_per_hour, first.currency, placement.replicas_by_class
        for p in cost_policies:
            rate = place(desired, ordered_classes(p), cpr).cost_per_hour
            new_cost[p.policy_id] = CostState(
                month=month_key(now), spent=spent_by_policy[p.policy_id], cost_per_hour=rate, since=now
            )

    action: Literal["scale_up", "scale_down", "hold"] = (
        "scale_up" if desired > current else "scale_down" if desired < current else "hold"
    )
    explanation = _explain(
        action,
        current,
        desired,
        binding,
        evaluations,
        lo,
        hi,
        bounds_source,
        budget_summaries,
        fair,
        cost_per_hour,
        currency,
        demand,
    )
    if quota_capped is not None:
        explanation += f"; quota: {quota_capped.detail}; CAPPED"
    if request is not None:
        outcome = "granted" if desired == request.target else f"capped at {desired} by {binding}"
        explanation += f"; request {request.event_id} for {request.target} replicas: {outcome}"
    decision = ScalingDecision(
        tenant_id=inputs.tenant_id,
        workload=inputs.workload,
        at=now,
        current_replicas=current,
        ready_replicas=inputs.ready_replicas,
        desired_replicas=desired,
        action=action,
        demand=demand,
        demand_aggregation=inputs.demand_aggregation,
        capacity_per_replica=cpr,
        utilization=utilization,
        forecast=ForecastSummary.from_forecast(inputs.forecast) if inputs.forecast is not None else None,
        policies=evaluations,
        combined_replicas=combined,
        min_replicas=lo,
        max_replicas=hi,
        bounds_source=bounds_source,
        binding=binding,
        budget=budget_summaries,
        fair_share=fair,
        cost_per_hour=cost_per_hour,
        currency=currency,
        replicas_by_class=by_class,
        explanation=explanation,
    )

    keep = max((p.behavior.longest_period_seconds() for p in mine if isinstance(p, TargetTrackingPolicy)), default=0)
    events = hpa.trim_events(state.scale_events, t, keep)
    if desired != current:
        events.append((t, desired - current))
    new_state = ScalingState(
        tenant_id=state.tenant_id,
        workload=state.workload,
        last_decision_at=now,
        desired_replicas=desired,
        scale_events=events,
        recommendations=new_recs,
        cost=new_cost,
    )
    return decision, new_state


def _scale_in_window(seconds: int) -> Behavior:
    return Behavior(
        scale_up=ScalingRules(stabilization_window_seconds=0),
        scale_down=ScalingRules(stabilization_window_seconds=seconds),
    )


def _spent(policy_id: str, state: ScalingState, inputs: DecisionInputs, now: datetime) -> float:
    if inputs.spent_this_month is not None and policy_id in inputs.spent_this_month:
        return float(inputs.spent_this_month[policy_id])
    previous = state.cost.get(policy_id)
    if previous is None:
        return 0.0
    this_month = month_key(now)
    if previous.month != this_month:
        start = datetime.strptime(this_month + "-01", "%Y-%m-%d").replace(tzinfo=UTC)
        return accrue(0.0, previous.cost_per_hour, max(start, previous.since), now)
    return accrue(previous.spent, previous.cost_per_hour, previous.since, now)


def _explain(
    action: str,
    current: int,
    desired: int,
    binding: str,
    evaluations: Sequence[PolicyEvaluation],
    lo: int,
    hi: int,
    bounds_source: str,
    budgets: Sequence[BudgetSummary],
    fair: FairShareSummary | None,
    cost_per_hour: float | None,
    currency: str | None,
    demand: float | None,
) -> str:
    parts = [f"{action} {current} -> {desired} replicas, set by {binding}"]
    if demand is not None:
        parts.append(f"demand {demand:.4g}")
    for ev in evaluations:
        if ev.kind == "cost_aware":
            continue
        flag = "" if ev.active else " [not applied]"
        value = "-" if ev.desired is None else str(ev.desired)
        parts.append(f"{ev.kind} {ev.policy_id}: {value}{flag} ({ev.reason})")
    hi_text = "unbounded" if hi >= _UNBOUNDED else str(hi)
    parts.append(f"bounds [{lo}, {hi_text}] from {bounds_source}")
    for b in budgets:
        parts.append(b.message)
    if fair is not None:
        parts.append(
            f"fair share: granted {fair.granted} of {fair.requested} requested "
            f"(dominant {fair.dominant_resource} share {fair.dominant_share:.3g}, weight {fair.weight:g}, "
            f"limited by {fair.limited_by})" + ("; CAPPED" if fair.capped else "")
        )
    if cost_per_hour is not None:
        parts.append(f"cost {cost_per_hour:.4g} {currency}/h")
    return "; ".join(parts)
