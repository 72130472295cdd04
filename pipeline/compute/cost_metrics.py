"""Compute spend gauges, computed when Prometheus scrapes (like ``pipeline/worker_metrics.py``): always current,
nothing to keep up to date in between.

``provisioning_compute_spend_usd``, ``..._committed_usd``, ``..._forecast_usd`` and ``..._budget_usd`` by
``tenant`` (:mod:`pipeline.compute.costs`), over the tenants whose compute records this worker holds (sum by
tenant across workers). The ``tenant`` label is bounded by configuration, not by data: a tenant gets its own
series only when it is named in COMPUTE_TENANT_POLICIES (at most :data:`MAX_TENANT_LABELS` of them, the first by
name); every other tenant is added up under ``tenant="_other"``, whose budget is the sum of their budgets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from datetime import datetime

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pipeline.compute.costs import BudgetPeriod, CostSource, TenantCosts, tenant_costs

logger = logging.getLogger(__name__)

SPEND = "provisioning_compute_spend_usd"
COMMITTED = "provisioning_compute_committed_usd"
FORECAST = "provisioning_compute_forecast_usd"
BUDGET = "provisioning_compute_budget_usd"
OTHER = "_other"
MAX_TENANT_LABELS = 50

_HELP = {
    SPEND: "Compute spend of the budget period so far (USD), by tenant.",
    COMMITTED: "Compute spend committed by running, starting and reserved allocations (USD), by tenant.",
    FORECAST: "Compute spend forecast to the end of the budget period at current scaling (USD), by tenant.",
    BUDGET: "Compute budget per period (USD), by tenant; absent for tenants without a budget.",
}


def labelled_tenants(configured: Collection[str]) -> frozenset[str]:
    """The tenants with a series of their own: those named in the configuration ("*" is not a tenant)."""
    return frozenset(sorted(t for t in configured if t != "*")[:MAX_TENANT_LABELS])


def by_label(costs: list[TenantCosts], labelled: frozenset[str]) -> dict[str, tuple[float, float, float, float | None]]:
    """label -> (spent, committed, forecast, budget): named tenants as they are, the rest added up."""
    out: dict[str, tuple[float, float, float, float | None]] = {}
    for c in costs:
        label = c.tenant_id if c.tenant_id in labelled else OTHER
        spent, committed, forecast, budget = out.get(label, (0.0, 0.0, 0.0, None))
        if c.budget_usd is not None:
            budget = (budget or 0.0) + c.budget_usd
        out[label] = (spent + c.spent_usd, committed + c.committed_usd, forecast + c.forecast_usd, budget)
    return out


class CostCollector(Collector):
    def __init__(self, source: Callable[[], CostSource], period: BudgetPeriod, labelled: frozenset[str],
                 clock: Callable[[], datetime] | None = None) -> None:
        self._source = source
        self._period = period
        self._labelled = labelled
        self._clock = clock

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, text in _HELP.items():
            yield GaugeMetricFamily(name, text, labels=["tenant"])

    def costs(self) -> list[TenantCosts]:
        source = self._source()
        now = self._clock() if self._clock is not None else source.clock()
        records = source.usage_records(now)
        tenants = sorted({r.tenant_id for r in records})
        return [tenant_costs(records, t, now, budget_usd=source.policy(t).budget_usd, period=self._period)
                for t in tenants]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {name: GaugeMetricFamily(name, text, labels=["tenant"]) for name, text in _HELP.items()}
        try:
            rows = by_label(self.costs(), self._labelled)
        except Exception:  # a scrape must not fail because of one bad record: report nothing this time
            logger.warning("compute costs unavailable during a scrape", exc_info=True)
            rows = {}
        for label, (spent, committed, forecast, budget) in sorted(rows.items()):
            families[SPEND].add_metric([label], spent)
            families[COMMITTED].add_metric([label], committed)
            families[FORECAST].add_metric([label], forecast)
            if budget is not None:
                families[BUDGET].add_metric([label], budget)
        yield from families.values()


_registered: dict[int, CostCollector] = {}


def register(collector: CostCollector, registry: CollectorRegistry = REGISTRY) -> None:
    """Register ``collector``, replacing one registered earlier in this process on the same registry."""
    previous = _registered.pop(id(registry), None)
    if previous is not None:
        registry.unregister(previous)
    registry.register(collector)
    _registered[id(registry)] = collector
