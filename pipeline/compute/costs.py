"""Cost monitoring of a tenant's compute: spend so far, committed spend, forecast, budget (pure).

The figures split what the budget check already counts (:meth:`ComputeRecord.cost_usd` over the records
of the budget period, :meth:`ComputeService.usage_records`), so that ``spent + committed`` is the amount
the optimizer compares with the budget (plus reservations, see below), never a second way of pricing:

* ``spent``: money already gone. A finished record's :meth:`~ComputeRecord.cost_usd` (the time it
  actually ran); a running (or terminating) record's price x the hours it has run, capped at its
  duration.
* ``committed``: money promised but not yet spent. The rest of a holding record's cost (its price x
  the hours left of its duration; the whole duration while provisioning), the chosen candidate's total
  while allocating, and for a reservation (``requested`` with a later ``start_at``) the total of the
  offer chosen when it was accepted. The optimizer's budget check counts the same figures
  (:func:`pipeline.compute.service.usage_of`), so an accepted reservation holds its part of the budget
  from the moment it is accepted.
* ``forecast`` (to the end of the budget period, "at current scaling"): ``spent + committed`` plus, for
  every running allocation, its price x the hours between the end of its commitment and the end of the
  period, i.e. the machines running now are assumed to be renewed at their price until the period ends,
  nothing else is added. With ``COMPUTE_BUDGET_PERIOD=total`` there is no period end and the forecast is
  ``spent + committed``.
* ``fraction``: ``(spent + committed) / budget`` (``None`` without a budget; a zero budget is used up,
  1.0, by any spend and unused, 0.0, otherwise).

Every figure is finite and non-negative; datetimes must be timezone-aware.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.compute.lifecycle import ComputeRecord, ComputeState
from pipeline.compute.optimizer import TenantPolicy

BudgetPeriod = Literal["month", "total"]
CURRENCY: Literal["USD"] = "USD"
_RUNNING = frozenset({ComputeState.RUNNING, ComputeState.TERMINATING})


def _aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("timezone-aware datetime required")


def period_bounds(period: BudgetPeriod, now: datetime) -> tuple[datetime | None, datetime | None]:
    """Start and end (exclusive) of the budget period containing ``now`` (UTC calendar month), or
    ``(None, None)`` for ``total`` (one period forever)."""
    _aware(now)
    if period == "total":
        return None, None
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def _hours(seconds: float) -> float:
    return max(seconds, 0.0) / 3600.0


def split(record: ComputeRecord, now: datetime) -> tuple[float, float]:
    """``(spent, committed)`` of one record at ``now`` (see the module docstring)."""
    _aware(now)
    if record.state is ComputeState.REQUESTED:
        chosen = record.decision.chosen if record.decision is not None else None
        reserved = record.request.start_at is not None and record.request.start_at > record.created_at
        return 0.0, _clean(chosen.total_cost) if chosen is not None and reserved else 0.0
    total = _clean(record.cost_usd(now))
    if record.terminal:
        return total, 0.0
    if record.state in _RUNNING and record.running_since is not None and record.price_per_hour is not None:
        ran = min(_hours((now - record.running_since).total_seconds()), record.request.duration_hours)
        spent = min(_clean(record.price_per_hour * ran), total)
        return spent, total - spent
    return 0.0, total


def _clean(value: float) -> float:
    """A price figure made safe to add up: negative or non-finite inputs (never expected) count as 0."""
    return value if math.isfinite(value) and value > 0 else 0.0


class TenantCosts(BaseModel):
    """Body of ``GET /api/v1/tenants/{tenant_id}/costs`` and the dashboard's spend chart."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    tenant_id: str
    currency: Literal["USD"] = CURRENCY
    spent_usd: float = Field(ge=0, description="Already spent in the budget period.")
    committed_usd: float = Field(ge=0, description="Promised by running, starting and reserved allocations.")
    forecast_usd: float = Field(
        ge=0, description="Spent + committed + running allocations renewed at their price to the period's end."
    )
    budget_usd: float | None = Field(default=None, ge=0, description="The tenant's budget per period (none: no cap).")
    fraction: float | None = Field(default=None, ge=0, description="(spent + committed) / budget.")
    running_usd_per_hour: float = Field(ge=0, description="Hourly price of the allocations running now.")
    allocations: int = Field(ge=0, description="Allocations counted (running, starting, reserved).")
    period: BudgetPeriod
    period_start: AwareDatetime | None
    period_end: AwareDatetime | None
    generated_at: AwareDatetime

    @property
    def used_usd(self) -> float:
        return self.spent_usd + self.committed_usd


#: The largest ``fraction`` reported (spent + committed a million times the budget).
MAX_BUDGET_FRACTION = 1e6


def budget_fraction(used: float, budget: float | None) -> float | None:
    if budget is None:
        return None
    if budget <= 0:
        return 1.0 if used > 0 else 0.0
    # A budget of a fraction of a cent would overflow the ratio: a million times over is over enough.
    return min(used / budget, MAX_BUDGET_FRACTION)


def tenant_costs(
    records: Iterable[ComputeRecord],
    tenant_id: str,
    now: datetime,
    *,
    budget_usd: float | None,
    period: BudgetPeriod,
) -> TenantCosts:
    """The tenant's costs from ``records`` (any tenants'; the budget period's, as
    :meth:`ComputeService.usage_records` selects them) at ``now``."""
    _aware(now)
    start, end = period_bounds(period, now)
    spent = committed = renewal = rate = 0.0
    counted = 0
    for record in records:
        if record.tenant_id != tenant_id:
            continue
        part_spent, part_committed = split(record, now)
        spent += part_spent
        committed += part_committed
        if part_committed > 0:
            counted += 1
        if record.state is ComputeState.RUNNING and record.price_per_hour is not None:
            price = _clean(record.price_per_hour)
            rate += price
            if end is not None and record.running_since is not None:
                committed_until = max(record.ends_at or record.running_since, now)
                renewal += price * _hours((end - committed_until).total_seconds())
    used = spent + committed
    return TenantCosts(
        tenant_id=tenant_id,
        spent_usd=spent,
        committed_usd=committed,
        forecast_usd=used + renewal,
        budget_usd=budget_usd,
        fraction=budget_fraction(used, budget_usd),
        running_usd_per_hour=rate,
        allocations=counted,
        period=period,
        period_start=start,
        period_end=end,
        generated_at=now,
    )


def crossed_thresholds(fraction: float | None, thresholds: Iterable[float]) -> list[float]:
    """The thresholds (fractions of the budget) that ``fraction`` has reached, ascending."""
    if fraction is None:
        return []
    return sorted(t for t in set(thresholds) if fraction >= t)


class CostSource(Protocol):
    """What :func:`costs_of` reads: :class:`pipeline.compute.service.ComputeService`."""

    def usage_records(self, now: datetime) -> list[ComputeRecord]: ...

    def policy(self, tenant_id: str) -> TenantPolicy: ...

    def clock(self) -> datetime: ...


def costs_of(source: CostSource, tenant_id: str, period: BudgetPeriod, now: datetime | None = None) -> TenantCosts:
    """The tenant's costs from the compute service of the worker owning it: the records and budget the
    service's budget check uses."""
    now = now or source.clock()
    return tenant_costs(source.usage_records(now), tenant_id, now, budget_usd=source.policy(tenant_id).budget_usd,
                        period=period)
