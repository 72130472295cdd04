"""``GET /api/v1/tenants/{tenant_id}/costs``: a tenant's compute spend so far, committed and forecast spend,
against its budget for the budget period (:mod:`pipeline.compute.costs`).

The figures come from the compute records and budget of the worker owning the tenant: the read goes through the
``StateReader`` like every per-tenant read (``compute_costs``), served locally when this worker owns the tenant,
else by the owner's internal state endpoint (readable ``compute-costs``, :class:`ComputeCostsView`).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from pipeline.compute.costs import BudgetPeriod, TenantCosts, costs_of
from pipeline.compute.runtime import ComputeRuntime
from pipeline.tenants.models import TenantState
from web.api import Operation, respond, tenant_not_found
from web.auth import Access
from web.errors import ApiError
from web.state import StateReader

_AUTH_ERRORS = (401, 403, 503)


class ComputeCostsView:
    """Read-only view for the API, the dashboard and peers: a tenant's costs from this worker's compute runtime
    (the owner of the tenant's compute records)."""

    model = TenantCosts

    def __init__(self, runtime: Callable[[], ComputeRuntime], period: BudgetPeriod) -> None:
        self.runtime = runtime
        self.period = period

    def get(self, tenant_id: str) -> TenantCosts:
        return costs_of(self.runtime().service, tenant_id, self.period)


class CostsApi:
    def __init__(self, reader: StateReader) -> None:
        self.reader = reader

    async def costs(self, request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant_id"]  # checked by the API middleware (pattern, isolation)
        tenant = await self.reader.tenant(tenant_id)
        if tenant is None or tenant.state is TenantState.DELETED:
            raise tenant_not_found(tenant_id)
        costs = await self.reader.compute_costs(tenant_id)
        if costs is None:
            raise ApiError(503, "costs-unavailable", "no compute state is served for this tenant; retry shortly",
                           {"tenant_id": tenant_id}, headers={"Retry-After": "5"})
        return respond(costs)


def operations(reader: StateReader) -> list[Operation]:
    """The cost routes (mounted with the rest of /api/v1: same auth, tenant isolation, audit, OpenAPI)."""
    api = CostsApi(reader)
    return [
        Operation(
            "GET", "/tenants/{tenant_id}/costs", "get_costs",
            "Compute spend so far, committed and forecast spend, against the tenant's budget", api.costs,
            Access.READ, {200: (TenantCosts, "The tenant's compute costs in the current budget period.")},
            errors=(*_AUTH_ERRORS, 404, 500), tenant_in_path=True,
            description="Spent: what the period's allocations have cost so far (finished ones, and the hours run "
            "of running ones). Committed: the rest of the running and starting allocations' durations and the "
            "reservations, at their price. Forecast: spent + committed, plus every running allocation renewed at "
            "its price until the period ends (COMPUTE_BUDGET_PERIOD=month: the UTC calendar month; total: no end, "
            "no renewal). Fraction: (spent + committed) / budget; budget-alert events on provisioning-events "
            "announce each COMPUTE_BUDGET_ALERT_THRESHOLDS fraction once per period.",
        ),
    ]
