"""Cost-aware capping: prices per capacity class, hourly and monthly budgets.

* Replicas are placed in capacity classes cheapest first (or in the listed order), each class up to
  its ``max_replicas``; the cost per hour is ``sum(replicas * capacity_per_replica * price)``.
* The allowed spend per hour is the smaller of ``budget_per_hour`` and the rest of the monthly budget
  spread over the hours left in the (UTC) month.
* The budget cap is the largest replica count whose cheapest placement fits the allowed spend.

Nothing here reads a clock: ``now`` and the amount spent this month come from the caller (the
decision state integrates the cost of past decisions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.scaling.policies import CapacityClass, CostAwarePolicy

_EPS = 1e-9


def month_key(now: datetime) -> str:
    """``YYYY-MM`` of ``now`` in UTC (the budget month)."""
    return now.astimezone(UTC).strftime("%Y-%m")


def hours_left_in_month(now: datetime) -> float:
    """Hours from ``now`` to the start of the next UTC month."""
    utc = now.astimezone(UTC)
    if utc.month == 12:
        nxt = datetime(utc.year + 1, 1, 1, tzinfo=UTC)
    else:
        nxt = datetime(utc.year, utc.month + 1, 1, tzinfo=UTC)
    return max((nxt - utc).total_seconds() / 3600.0, 1.0 / 3600.0)


def ordered_classes(policy: CostAwarePolicy) -> list[CapacityClass]:
    if policy.prefer_cheaper:
        return sorted(policy.capacity_classes, key=lambda c: c.price_per_unit_hour)
    return list(policy.capacity_classes)


@dataclass(frozen=True)
class Placement:
    replicas_by_class: dict[str, int]
    cost_per_hour: float
    unplaced: int
    """Replicas no class could supply (all classes at their ``max_replicas``)."""


def place(replicas: int, classes: Sequence[CapacityClass], capacity_per_replica: float) -> Placement:
    """Put ``replicas`` into ``classes`` in the given order, each up to its ``max_replicas``."""
    left = max(replicas, 0)
    placed: dict[str, int] = {}
    cost = 0.0
    for cls in classes:
        if left == 0:
            break
        take = left if cls.max_replicas is None else min(left, cls.max_replicas)
        if take > 0:
            placed[cls.name] = take
            cost += take * capacity_per_replica * cls.price_per_unit_hour
            left -= take
    return Placement(replicas_by_class=placed, cost_per_hour=cost, unplaced=left)


def max_affordable(
    classes: Sequence[CapacityClass], capacity_per_replica: float, allowed_per_hour: float
) -> int | None:
    """Most replicas whose placement (in ``classes`` order) costs at most ``allowed_per_hour``.

    ``None`` when unbounded (a free class without a replica limit).
    """
    budget = max(allowed_per_hour, 0.0)
    total = 0
    for cls in classes:
        price = capacity_per_replica * cls.price_per_unit_hour
        if price <= 0.0:
            if cls.max_replicas is None:
                return None
            total += cls.max_replicas
            continue
        n = math.floor(budget / price + _EPS)
        if cls.max_replicas is not None:
            n = min(n, cls.max_replicas)
        total += n
        budget -= n * price
        if cls.max_replicas is None or n < cls.max_replicas:
            break
    return total


@dataclass(frozen=True)
class BudgetCheck:
    """Outcome of applying one cost-aware policy to a replica count."""

    policy_id: str
    currency: str
    requested: int
    replicas: int
    capped: bool
    over_budget: bool
    allowed_per_hour: float
    cost_per_hour: float
    replicas_by_class: dict[str, int]
    affordable_replicas: int | None
    spent_this_month: float
    month_remaining: float | None
    message: str
    notes: list[str] = field(default_factory=list)


def allowed_spend_per_hour(policy: CostAwarePolicy, now: datetime, spent_this_month: float) -> float:
    """The smaller of the hourly budget and the rest of the monthly budget per remaining hour."""
    allowed = math.inf
    if policy.budget_per_hour is not None:
        allowed = policy.budget_per_hour
    if policy.budget_per_month is not None:
        remaining = max(policy.budget_per_month - spent_this_month, 0.0)
        allowed = min(allowed, remaining / hours_left_in_month(now))
    return allowed


def apply_budget(
    policy: CostAwarePolicy,
    replicas: int,
    capacity_per_replica: float,
    now: datetime,
    spent_this_month: float,
    min_replicas: int = 0,
) -> BudgetCheck:
    """Cap ``replicas`` to what ``policy``'s budget pays for; say so when it does."""
    classes = ordered_classes(policy)
    allowed = allowed_spend_per_hour(policy, now, spent_this_month)
    affordable = max_affordable(classes, capacity_per_replica, allowed)
    notes: list[str] = []
    final = replicas
    capped = False
    over = False
    if affordable is not None and replicas > affordable:
        if affordable < min_replicas and not policy.budget_over_min_replicas:
            final = max(min_replicas, affordable)
            over = final > affordable
            notes.append(f"budget pays for {affordable} replicas but min_replicas={min_replicas} is kept: OVER BUDGET")
        else:
            final = affordable
            if affordable < min_replicas:
                notes.append(f"budget cap {affordable} is below min_replicas={min_replicas}")
        capped = final < replicas
    placement = place(final, classes, capacity_per_replica)
    if placement.unplaced:
        notes.append(f"capacity classes cannot supply {placement.unplaced} of {final} replicas")
        final -= placement.unplaced
        capped = capped or final < replicas
    month_remaining = None
    if policy.budget_per_month is not None:
        month_remaining = policy.budget_per_month - spent_this_month
    cost = placement.cost_per_hour
    if capped:
        message = (
            f"capped by budget of policy {policy.policy_id}: {replicas} replicas wanted, {final} "
            f"affordable at {allowed:.4g} {policy.currency}/h allowed"
        )
    elif over:
        message = f"over budget of policy {policy.policy_id}: {cost:.4g} {policy.currency}/h > {allowed:.4g} allowed"
    else:
        message = f"within budget of policy {policy.policy_id}: {cost:.4g} of {allowed:.4g} {policy.currency}/h"
    if notes:
        message = message + "; " + "; ".join(notes)
    return BudgetCheck(
        policy_id=policy.policy_id,
        currency=policy.currency,
        requested=replicas,
        replicas=final,
        capped=capped,
        over_budget=over or cost > allowed + _EPS,
        allowed_per_hour=allowed,
        cost_per_hour=cost,
        replicas_by_class=placement.replicas_by_class,
        affordable_replicas=affordable,
        spent_this_month=spent_this_month,
        month_remaining=month_remaining,
        message=message,
        notes=notes,
    )


def accrue(spent: float, cost_per_hour: float, since: datetime | None, now: datetime) -> float:
    """Add the cost of running at ``cost_per_hour`` from ``since`` to ``now`` (same month only)."""
    if since is None or now <= since:
        return spent
    return spent + cost_per_hour * (now - since).total_seconds() / 3600.0
