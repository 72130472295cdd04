"""GET /api/v1/tenants/{tenant_id}/costs over in-memory state, the owner's view of it (``compute-costs``), and the
spend gauges exported at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from pipeline.compute import cost_metrics
from pipeline.compute.catalog import Offer, load_catalogs
from pipeline.compute.factory import catalog_paths
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.request import ComputeRequest
from pipeline.config import Settings
from pipeline.events.models import Tier
from tests.pipeline.compute.support import runtime_env
from tests.web.conftest import ADMIN, bearer, error_of, tenant_event, token
from tests.web.memory_state import MemoryState
from tests.web.test_dashboard_spend import running
from web.costs import ComputeCostsView

NOW = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)  # 12 h before the month ends
ACME_VIEWER = token(("tenant-viewer",), "acme", sub="acme-viewer")


@pytest.fixture(scope="module")
def offers() -> list[Offer]:
    return load_catalogs(catalog_paths(Settings(compute_catalog_dir=None)))


@pytest.fixture
def records(state: MemoryState) -> list[ComputeRecord]:
    held: list[ComputeRecord] = [running("acme", "acme.r1", NOW - timedelta(hours=1), 6),
                                 running("globex", "globex.r1", NOW, 2)]
    state.compute_records = lambda: list(held)
    state.compute_budgets = {"acme": 120.0}
    state.now = lambda: NOW
    return held


async def test_costs_of_a_tenant(
    client: TestClient[Any, Any], state: MemoryState, records: list[ComputeRecord]
) -> None:
    await state.submit_tenant(tenant_event("acme", Tier.ENTERPRISE))
    response = await client.get("/api/v1/tenants/acme/costs", headers=bearer(ACME_VIEWER))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["tenant_id"] == "acme" and body["currency"] == "USD"
    assert body["spent_usd"] == pytest.approx(10.0) and body["committed_usd"] == pytest.approx(50.0)
    assert body["forecast_usd"] == pytest.approx(60.0 + 70.0)  # renewed for the 7 h after its 5 h left
    assert body["budget_usd"] == 120.0 and body["fraction"] == pytest.approx(0.5)
    assert body["period"] == "month"
    assert body["period_start"] == "2026-05-01T00:00:00Z" and body["period_end"] == "2026-06-01T00:00:00Z"


async def test_another_tenants_costs_are_refused_and_unknown_tenants_are_404(
    client: TestClient[Any, Any], state: MemoryState, records: list[ComputeRecord]
) -> None:
    await state.submit_tenant(tenant_event("globex", Tier.ENTERPRISE))
    refused = await client.get("/api/v1/tenants/globex/costs", headers=bearer(ACME_VIEWER))
    assert refused.status == 403
    assert (await error_of(refused))["code"] == "forbidden"
    missing = await client.get("/api/v1/tenants/nobody/costs", headers=bearer(ADMIN))
    assert missing.status == 404
    assert (await error_of(missing))["code"] == "tenant-not-found"
    malformed = await client.get("/api/v1/tenants/NOT_A_TENANT/costs", headers=bearer(ADMIN))
    assert malformed.status == 404
    await error_of(malformed)


async def test_the_owner_view_and_the_gauges_count_the_runtimes_allocations(offers: list[Offer]) -> None:
    async with runtime_env(offers, quotas={"acme": 8, "globex": 8}, compute_budget_period="month",
                           compute_tenant_policies={"acme": {"budget_usd": 1000.0}, "*": {"budget_usd": 50.0}}
                           ) as env:
        for tenant_id in ("acme", "globex"):
            request = ComputeRequest.model_validate({"tenant_id": tenant_id, "resources": {"vcpus": 2},
                                                     "duration_hours": 1})
            provisioned = await env.runtime.provision(f"{tenant_id}.r1", request, wait_s=10)
            assert provisioned.finished and provisioned.record.price_per_hour is not None
        view = ComputeCostsView(lambda: env.runtime, "month")
        acme = view.get("acme")
        price = env.runtime.get("acme.r1").price_per_hour
        assert acme.spent_usd + acme.committed_usd == pytest.approx(price)  # 1 h at its price
        assert acme.budget_usd == 1000.0 and acme.committed_usd > 0

        registry = CollectorRegistry()
        labelled = cost_metrics.labelled_tenants({"acme": None, "*": None})
        cost_metrics.register(cost_metrics.CostCollector(lambda: env.runtime.service, "month", labelled), registry)
        used = registry.get_sample_value(cost_metrics.SPEND, {"tenant": "acme"}) or 0.0
        used += registry.get_sample_value(cost_metrics.COMMITTED, {"tenant": "acme"}) or 0.0
        assert used == pytest.approx(acme.spent_usd + acme.committed_usd, rel=1e-3)
        assert registry.get_sample_value(cost_metrics.BUDGET, {"tenant": "acme"}) == 1000.0
        # globex is not named in the configuration: counted under _other, never under its own label
        assert registry.get_sample_value(cost_metrics.BUDGET, {"tenant": "globex"}) is None
        assert registry.get_sample_value(cost_metrics.BUDGET, {"tenant": cost_metrics.OTHER}) == 50.0
        assert (registry.get_sample_value(cost_metrics.FORECAST, {"tenant": cost_metrics.OTHER}) or 0.0) > 0


def test_label_set_is_bounded_by_the_configuration() -> None:
    many = {f"t{i:03d}" for i in range(200)} | {"*"}
    labelled = cost_metrics.labelled_tenants(many)
    assert len(labelled) == cost_metrics.MAX_TENANT_LABELS and "*" not in labelled
