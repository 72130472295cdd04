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
5. quota: a scale-up is capped at the replicas the tenant's quota leaves room for (when given: scaling
   requests), and held at the current count while the tenant is marked over its cpu_cores, memory_gib or gpus
   quota (any decision) (``binding: quota``; never a scale-down);
6. fair share: the tenant's DRF grant caps the count;
7. quarantine (``DecisionInputs.quarantined``): the workload is held at its policy floor, never scaled up
   (``binding: quarantine``).

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pipeline.scaling import hpa
from pipeline.scaling.decide_caps import (
    Count,
    budget_step,
    fair_share_step,
    final_cost,
    quarantine_step,
    quota_step,
)
from pipeline.scaling.decide_explain import explain, explain_caps
from pipeline.scaling.decision_models import (
    UNBOUNDED,
    CostState,
    DecisionInputs,
    ForecastSummary,
    PolicyEvaluation,
    ScalingDecision,
    ScalingState,
)
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
from pipeline.scaling.requests import RequestInput
from pipeline.scaling.schedule import schedule_effect

logger = logging.getLogger(__name__)



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


# --------------------------------------------------------------------------- the steps
# Each step below is a pure function of what the steps before it produced; ``decide`` reads as their sequence.


@dataclass(frozen=True)
class _Observed:
    """Step 1: the inputs read and checked, in the units the other steps use."""

    now: datetime
    """``inputs.now`` in UTC."""
    epoch: float
    current: int
    cpr: float
    demand: float | None
    utilization: float | None
    mine: list[Policy]
    """The enabled policies of this workload, in the order given."""


@dataclass(frozen=True)
class _Bounds:
    lo: int
    hi: int
    source: str


@dataclass(frozen=True)
class _Candidate:
    """A policy's desired value that takes part in the combination."""

    source: str
    desired: int
    override: bool


@dataclass(frozen=True)
class _Evaluated:
    """What evaluating some policies gave: their explanations, their candidates, their new histories."""

    evaluations: list[PolicyEvaluation] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)
    recommendations: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


def _read_inputs(inputs: DecisionInputs, policies: Sequence[Policy]) -> _Observed:
    now = inputs.now
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("decide() needs a timezone-aware 'now'")
    if inputs.capacity_per_replica <= 0:
        raise ValueError("capacity_per_replica must be positive")
    if inputs.current_replicas < 0:
        raise ValueError("current_replicas must be >= 0")
    now = now.astimezone(UTC)
    current = inputs.current_replicas
    cpr = inputs.capacity_per_replica
    demand = _aggregate(inputs.demand_window, inputs.demand_aggregation)
    return _Observed(
        now=now,
        epoch=_epoch(now),
        current=current,
        cpr=cpr,
        demand=demand,
        utilization=None if demand is None or current == 0 else demand / (current * cpr),
        mine=[p for p in policies if p.enabled and p.tenant_id == inputs.tenant_id and p.workload == inputs.workload],
    )


def _policy_bounds(mine: Sequence[Policy], tenant_id: str, workload: str) -> _Bounds:
    """``[max(min_replicas), min(max_replicas)]`` of the policies that are neither scheduled nor forecast-only."""
    bounded = [
        p
        for p in mine
        if not isinstance(p, ScheduledPolicy) and not (isinstance(p, PredictivePolicy) and p.forecast_only)
    ]
    lo = max((p.min_replicas for p in bounded), default=0)
    hi = min((p.max_replicas for p in bounded), default=UNBOUNDED)
    if lo > hi:
        logger.warning("policies of %s/%s have min_replicas %d > max_replicas %d", tenant_id, workload, lo, hi)
        return _Bounds(lo, lo, "policies (min_replicas above max_replicas: max raised to min)")
    return _Bounds(lo, hi, "policies" if bounded else "none")


def _scheduled_step(mine: Sequence[Policy], now: datetime, bounds: _Bounds) -> tuple[_Evaluated, _Bounds]:
    """The scheduled policies' windows active at ``now``: their desired values, and the bounds they replace."""
    scheduled = [p for p in mine if isinstance(p, ScheduledPolicy)]
    if not scheduled:
        return _Evaluated(), bounds
    effect = schedule_effect(scheduled, now)
    evaluated = _Evaluated()
    for sp in scheduled:
        windows = [a for a in effect.active if a.policy_id == sp.policy_id]
        if not windows:
            evaluated.evaluations.append(
                PolicyEvaluation(
                    policy_id=sp.policy_id, kind=sp.kind, active=False, desired=None, reason="no window active"
                )
            )
            continue
        names = ", ".join(f"{a.name} ({a.window.cron} {a.window.timezone})" for a in windows)
        desired_vals = [a.window.desired_replicas for a in windows if a.window.desired_replicas is not None]
        evaluated.evaluations.append(
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
            evaluated.candidates.append(
                _Candidate(f"schedule:{sp.policy_id}", max(desired_vals), sp.combine == "override")
            )
    if effect.min_replicas is None and effect.max_replicas is None:
        return evaluated, bounds
    lo = effect.min_replicas if effect.min_replicas is not None else bounds.lo
    hi = effect.max_replicas if effect.max_replicas is not None else bounds.hi
    active_ids = {a.policy_id for a in effect.active}
    return evaluated, _Bounds(lo, max(lo, hi), "schedule:" + ",".join(sorted(active_ids)))


def _reactive_target(
    p: TargetTrackingPolicy, obs: _Observed, state: ScalingState
) -> tuple[PolicyEvaluation, _Candidate | None, list[tuple[float, int]] | None]:
    """Target tracking: the HPA algorithm with the policy's stabilization window and rate limits."""
    demand, cpr, current, t = obs.demand, obs.cpr, obs.current, obs.epoch
    if demand is None:
        evaluation = PolicyEvaluation(
            policy_id=p.policy_id, kind=p.kind, active=False, desired=None, reason="no demand observed"
        )
        return evaluation, None, None
    raw = hpa.raw_recommendation(demand, cpr, current, p.target_utilization, p.tolerance)
    stabilized, history = hpa.stabilize(raw, current, t, state.recommendations.get(p.policy_id, []), p.behavior)
    # Bounds are applied once, after the combination, so that the binding names them.
    limited = hpa.rate_limit(stabilized, current, t, state.scale_events, p.behavior, 0, UNBOUNDED)
    reason = f"demand {demand:.4g} at target {p.target_utilization:g} x {cpr:g} per replica -> {raw}"
    if stabilized != raw:
        reason += f"; stabilized to {stabilized}"
    if limited.limited:
        reason += f"; {limited.reason} -> {limited.replicas}"
    evaluation = PolicyEvaluation(
        policy_id=p.policy_id,
        kind=p.kind,
        active=True,
        desired=limited.replicas,
        reason=reason,
        details={"raw": raw, "stabilized": stabilized, "utilization": obs.utilization},
    )
    return evaluation, _Candidate(f"policy:{p.policy_id}", limited.replicas, p.combine == "override"), history


def _predictive_target(
    p: PredictivePolicy, forecast: Forecast | None, obs: _Observed, state: ScalingState
) -> tuple[PolicyEvaluation, _Candidate | None, list[tuple[float, int]] | None]:
    """Predictive: the forecast band's value, with the optional scale-in stabilization."""
    result = predictive_desired(p, forecast, obs.current, obs.cpr, (0, UNBOUNDED))
    desired = result.desired
    reason = result.reason
    history: list[tuple[float, int]] | None = None
    if desired is not None and p.scale_in_stabilization_seconds > 0:
        stabilized, history = hpa.stabilize(
            desired,
            obs.current,
            obs.epoch,
            state.recommendations.get(p.policy_id, []),
            _scale_in_window(p.scale_in_stabilization_seconds),
        )
        if stabilized != desired:
            reason += f"; scale-in stabilized to {stabilized}"
        desired = stabilized
    acts = desired is not None and not p.forecast_only
    reason += " (forecast-only: not applied)" if p.forecast_only else ""
    evaluation = PolicyEvaluation(
        policy_id=p.policy_id, kind=p.kind, active=acts, desired=desired, reason=reason, details=dict(result.details)
    )
    if not acts or desired is None:
        return evaluation, None, history
    return evaluation, _Candidate(f"policy:{p.policy_id}", desired, p.combine == "override"), history


def _tracking_step(obs: _Observed, forecast: Forecast | None, state: ScalingState) -> _Evaluated:
    """The target-tracking and predictive policies, in the order given."""
    evaluated = _Evaluated()
    for p in obs.mine:
        if isinstance(p, TargetTrackingPolicy):
            evaluation, candidate, history = _reactive_target(p, obs, state)
        elif isinstance(p, PredictivePolicy):
            evaluation, candidate, history = _predictive_target(p, forecast, obs, state)
        else:
            continue
        evaluated.evaluations.append(evaluation)
        if candidate is not None:
            evaluated.candidates.append(candidate)
        if history is not None:
            evaluated.recommendations[p.policy_id] = history
    return evaluated


def _combine(
    candidates: Sequence[_Candidate], evaluations: list[PolicyEvaluation], request: RequestInput | None, current: int
) -> tuple[Count, list[PolicyEvaluation]]:
    """The maximum of the candidates (of the overriding ones when there are any); a scaling request replaces it
    (the policies are explained, not combined); no candidate holds the current count."""
    if request is not None:
        explained = [
            ev if ev.kind == "cost_aware" or not ev.active
            else ev.model_copy(update={"active": False, "reason": ev.reason + "; a scaling request sets the count"})
            for ev in evaluations
        ]
        explained.append(PolicyEvaluation(
            policy_id=request.event_id, kind="request", active=True, desired=request.target,
            reason=request.asked + (f": {request.reason}" if request.reason else ""),
        ))
        return Count(request.target, "request"), explained
    pool = [c for c in candidates if c.override] or list(candidates)
    if not pool:
        return Count(current, "hold"), evaluations
    best = max(pool, key=lambda c: c.desired)
    return Count(best.desired, best.source), evaluations


def _clamp(count: Count, bounds: _Bounds) -> Count:
    if count.desired < bounds.lo:
        return Count(bounds.lo, "min_replicas")
    if count.desired > bounds.hi:
        return Count(bounds.hi, "max_replicas")
    return count


def _action(current: int, desired: int) -> Literal["scale_up", "scale_down", "hold"]:
    return "scale_up" if desired > current else "scale_down" if desired < current else "hold"


def _next_state(
    state: ScalingState, obs: _Observed, desired: int, recommendations: dict[str, list[tuple[float, int]]],
    cost: dict[str, CostState],
) -> ScalingState:
    """The state to store: the scale events the rate limits need, the stabilization histories, the spend."""
    keep = max(
        (p.behavior.longest_period_seconds() for p in obs.mine if isinstance(p, TargetTrackingPolicy)), default=0
    )
    events = hpa.trim_events(state.scale_events, obs.epoch, keep)
    if desired != obs.current:
        events.append((obs.epoch, desired - obs.current))
    return ScalingState(
        tenant_id=state.tenant_id,
        workload=state.workload,
        last_decision_at=obs.now,
        desired_replicas=desired,
        scale_events=events,
        recommendations=recommendations,
        cost=cost,
    )


def decide(
    inputs: DecisionInputs,
    policies: Sequence[Policy],
    state: ScalingState | None = None,
) -> tuple[ScalingDecision, ScalingState]:
    """Decide the replica count of one workload; return the decision and the new state."""
    obs = _read_inputs(inputs, policies)
    if state is None:
        state = ScalingState(tenant_id=inputs.tenant_id, workload=inputs.workload)
    bounds = _policy_bounds(obs.mine, inputs.tenant_id, inputs.workload)
    scheduled, bounds = _scheduled_step(obs.mine, obs.now, bounds)
    tracking = _tracking_step(obs, inputs.forecast, state)
    combined, evaluations = _combine(
        [*scheduled.candidates, *tracking.candidates],
        [*scheduled.evaluations, *tracking.evaluations],
        inputs.request,
        obs.current,
    )
    count = _clamp(combined, bounds)
    cost_policies = [p for p in obs.mine if isinstance(p, CostAwarePolicy)]
    budgets = budget_step(cost_policies, count, obs.cpr, obs.now, bounds.lo, state, inputs)
    count, quota_capped = quota_step(budgets.count, obs.current, inputs.quota, inputs.over_quota)
    count, fair = fair_share_step(count, inputs.fair_share)
    count, held = quarantine_step(count, obs.current, bounds.lo, inputs.quarantined)
    cost = final_cost(cost_policies, count.desired, obs.cpr, obs.now, budgets.spent)
    evaluations = [*evaluations, *budgets.evaluations]
    action = _action(obs.current, count.desired)
    explanation = explain(
        action, obs.current, count.desired, count.binding, evaluations, bounds.lo, bounds.hi, bounds.source,
        budgets.summaries, fair, cost.cost_per_hour, cost.currency, obs.demand,
    ) + explain_caps(quota_capped, inputs.request, count, held)
    decision = ScalingDecision(
        tenant_id=inputs.tenant_id,
        workload=inputs.workload,
        at=obs.now,
        current_replicas=obs.current,
        ready_replicas=inputs.ready_replicas,
        desired_replicas=count.desired,
        action=action,
        demand=obs.demand,
        demand_aggregation=inputs.demand_aggregation,
        capacity_per_replica=obs.cpr,
        utilization=obs.utilization,
        forecast=ForecastSummary.from_forecast(inputs.forecast) if inputs.forecast is not None else None,
        policies=evaluations,
        combined_replicas=combined.desired,
        min_replicas=bounds.lo,
        max_replicas=bounds.hi,
        bounds_source=bounds.source,
        binding=count.binding,
        budget=budgets.summaries,
        fair_share=fair,
        cost_per_hour=cost.cost_per_hour,
        currency=cost.currency,
        replicas_by_class=cost.by_class,
        explanation=explanation,
    )
    ids = {p.policy_id for p in obs.mine}
    recommendations = {pid: list(recs) for pid, recs in state.recommendations.items() if pid in ids}
    recommendations.update(tracking.recommendations)
    return decision, _next_state(state, obs, count.desired, recommendations, cost.states)


def _scale_in_window(seconds: int) -> Behavior:
    return Behavior(
        scale_up=ScalingRules(stabilization_window_seconds=0),
        scale_down=ScalingRules(stabilization_window_seconds=seconds),
    )


