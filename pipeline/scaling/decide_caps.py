"""The caps after the combination (steps 4 to 6 of :func:`pipeline.scaling.decide.decide`): each budget, the
tenant's quota (scale-ups only), the fair-share grant; and the cost of the final count with each budget's new
spend state. Each step is pure: it takes the count and what set it, and returns the capped count and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.scaling.cost import accrue, apply_budget, month_key, ordered_classes, place
from pipeline.scaling.decision_models import (
    BudgetSummary,
    CostState,
    DecisionInputs,
    FairShareSummary,
    PolicyEvaluation,
    ScalingState,
)
from pipeline.scaling.fairshare import TenantAllocation
from pipeline.scaling.policies import CostAwarePolicy
from pipeline.scaling.requests import QuotaRoom


@dataclass(frozen=True)
class Count:
    """The replica count as it goes through the caps, and what set it last."""

    desired: int
    binding: str


@dataclass(frozen=True)
class Budgets:
    count: Count
    summaries: list[BudgetSummary]
    evaluations: list[PolicyEvaluation]
    spent: dict[str, float]


@dataclass(frozen=True)
class FinalCost:
    cost_per_hour: float | None
    currency: str | None
    by_class: dict[str, int]
    states: dict[str, CostState]


def budget_step(
    cost_policies: Sequence[CostAwarePolicy], count: Count, cpr: float, now: datetime, lo: int,
    state: ScalingState, inputs: DecisionInputs,
) -> Budgets:
    """Each cost-aware policy caps the count to what it pays for (never silently over budget)."""
    summaries: list[BudgetSummary] = []
    evaluations: list[PolicyEvaluation] = []
    spent_by_policy: dict[str, float] = {}
    for p in cost_policies:
        spent = _spent(p.policy_id, state, inputs, now)
        spent_by_policy[p.policy_id] = spent
        check = apply_budget(p, count.desired, cpr, now, spent, lo)
        binding = f"budget:{p.policy_id}" if check.capped or check.replicas != count.desired else count.binding
        count = Count(check.replicas, binding)
        summaries.append(BudgetSummary.from_check(check))
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
    return Budgets(count, summaries, evaluations, spent_by_policy)


def quota_step(
    count: Count, current: int, quota: QuotaRoom | None, over_quota: Sequence[str] = (),
) -> tuple[Count, QuotaRoom | None]:
    """A scale-up is capped at the replicas the tenant's quota leaves room for, and held at the current count
    while the tenant is marked over its quota for a compute resource (``over_quota``); never forces a
    scale-down."""
    if quota is not None and count.desired > max(current, quota.replicas):
        return Count(max(current, quota.replicas), "quota"), quota
    if over_quota and count.desired > current:
        marked = ", ".join(sorted(set(over_quota)))
        held = QuotaRoom(
            replicas=current,
            detail=f"tenant is marked over its {marked} quota: no scale-up until the mark is lifted (usage back "
            "within the limit, a raised quota or an admin lift)",
        )
        return Count(current, "quota"), held
    return count, None


def quarantine_step(count: Count, current: int, lo: int, quarantined: bool) -> tuple[Count, bool]:
    """A quarantined workload is held at its policy floor (``lo``) and never scaled up: the count is at most
    the lower of the floor and the current replicas; True when the quarantine set it."""
    held = min(current, lo)
    if quarantined and count.desired > held:
        return Count(held, "quarantine"), True
    return count, False


def fair_share_step(count: Count, grant: TenantAllocation | None) -> tuple[Count, FairShareSummary | None]:
    """The tenant's DRF grant caps the count."""
    if grant is None:
        return count, None
    capped = count.desired > grant.granted
    summary = FairShareSummary(
        requested=grant.requested,
        granted=grant.granted,
        capped=capped,
        dominant_resource=grant.dominant_resource,
        dominant_share=grant.dominant_share,
        weighted_share=grant.weighted_share,
        weight=grant.weight,
        limited_by=grant.limited_by,
    )
    return (Count(grant.granted, "fair_share") if capped else count), summary


def final_cost(
    cost_policies: Sequence[CostAwarePolicy], desired: int, cpr: float, now: datetime, spent: dict[str, float]
) -> FinalCost:
    """Cost of the final count (the first cost policy's classes and prices) and each budget's new spend state."""
    if not cost_policies:
        return FinalCost(None, None, {}, {})
    first = cost_policies[0]
    placement = place(desired, ordered_classes(first), cpr)
    states = {
        p.policy_id: CostState(
            month=month_key(now),
            spent=spent[p.policy_id],
            cost_per_hour=place(desired, ordered_classes(p), cpr).cost_per_hour,
            since=now,
        )
        for p in cost_policies
    }
    return FinalCost(placement.cost_per_hour, first.currency, placement.replicas_by_class, states)


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
