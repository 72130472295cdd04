"""Budget alerts: a ``budget-alert`` event on ``provisioning-events`` when a tenant's spent + committed
compute spend reaches a threshold of its budget (COMPUTE_BUDGET_ALERT_THRESHOLDS), once per threshold and
budget period.

Why they are checked when a compute record changes (``agents/compute_records.py``) rather than by a timer:
``spent + committed`` of a fixed set of records does not change with time (a running allocation's spend grows
by what its commitment shrinks, :mod:`pipeline.compute.costs`), so it can only cross a threshold when a record
changes. That agent runs in the tenant's partition, so it can also record the thresholds crossed in the
``budget-alerts`` table (a timer cannot write a table), before the next record of the tenant is looked at.

Exactly once as far as it matters: the event is sent (and acknowledged) before the crossed thresholds are
recorded, and its id is derived from tenant, period and threshold; a crash between the two sends the same
event again with the same id, which consumers drop as a duplicate. A new period starts with no threshold
crossed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.compute.costs import TenantCosts, crossed_thresholds
from pipeline.events.models import ProvisioningStatusEvent
from pipeline.outputs import derived_id

KIND = "budget-alert"


class BudgetAlertState(BaseModel):
    """Value of the ``budget-alerts`` table (key: tenant id): the thresholds already announced in a period."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    tenant_id: str
    period_start: AwareDatetime | None = None
    crossed: list[float] = Field(default_factory=list, max_length=64)


def _period_key(period_start: datetime | None) -> str:
    return period_start.isoformat() if period_start is not None else "total"


def due(costs: TenantCosts, state: BudgetAlertState | None, thresholds: Sequence[float]) -> list[float]:
    """Thresholds reached by ``costs`` and not announced yet in its period, ascending."""
    already: set[float] = set()
    if state is not None and _period_key(state.period_start) == _period_key(costs.period_start):
        already = set(state.crossed)
    return [t for t in crossed_thresholds(costs.fraction, thresholds) if t not in already]


def recorded(costs: TenantCosts, state: BudgetAlertState | None, sent: Sequence[float]) -> BudgetAlertState:
    """The state after announcing ``sent`` (an earlier period's thresholds are forgotten)."""
    same_period = state is not None and _period_key(state.period_start) == _period_key(costs.period_start)
    previous = state.crossed if state is not None and same_period else []
    return BudgetAlertState(tenant_id=costs.tenant_id, period_start=costs.period_start,
                            crossed=sorted({*previous, *sent}))


def event_id(tenant_id: str, period_start: datetime | None, threshold: float) -> str:
    return derived_id(KIND, tenant_id, _period_key(period_start), f"{threshold:g}")


def alert_event(costs: TenantCosts, threshold: float) -> ProvisioningStatusEvent:
    """The ``budget-alert`` event of ``threshold`` (status ``crossed``; the figures at the time in ``detail``)."""
    return ProvisioningStatusEvent(
        event_id=event_id(costs.tenant_id, costs.period_start, threshold),
        tenant_id=costs.tenant_id,
        occurred_at=costs.generated_at,
        kind=KIND,
        resource="compute-budget",
        status="crossed",
        detail={
            "threshold": threshold,
            "fraction": costs.fraction,
            "spent_usd": round(costs.spent_usd, 6),
            "committed_usd": round(costs.committed_usd, 6),
            "forecast_usd": round(costs.forecast_usd, 6),
            "budget_usd": costs.budget_usd,
            "currency": costs.currency,
            "period": costs.period,
            "period_start": costs.period_start.isoformat() if costs.period_start is not None else None,
            "period_end": costs.period_end.isoformat() if costs.period_end is not None else None,
        },
    )
