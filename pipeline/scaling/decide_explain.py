"""The decision's explanation: one line a person reads (what was decided, what set it, each policy's value, the
bounds, budgets, fair share, cost; the quota cap and a scaling request's outcome)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.scaling.decide_caps import Count
from pipeline.scaling.decision_models import UNBOUNDED, BudgetSummary, FairShareSummary, PolicyEvaluation
from pipeline.scaling.requests import QuotaRoom, RequestInput


def explain_caps(
    quota_capped: QuotaRoom | None, request: RequestInput | None, count: Count, quarantined: bool = False,
) -> str:
    """What the explanation adds for a quota cap, a quarantine hold and a scaling request's outcome."""
    text = ""
    if quota_capped is not None:
        text += f"; quota: {quota_capped.detail}; CAPPED"
    if quarantined:
        text += (f"; quarantined: held at {count.desired} (the policy floor, never a scale-up) until a platform "
                 "admin releases it")
    if request is not None:
        outcome = "granted" if count.desired == request.target else f"capped at {count.desired} by {count.binding}"
        text += f"; request {request.event_id} for {request.target} replicas: {outcome}"
    return text


def explain(
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
    hi_text = "unbounded" if hi >= UNBOUNDED else str(hi)
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
