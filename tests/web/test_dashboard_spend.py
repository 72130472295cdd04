"""The dashboard's compute spend chart in headless Chromium: each tenant's spent and committed spend against its
budget, from the live stream's tenant views (their ``costs``), updated when a compute record of a tenant changes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from pipeline.compute.lifecycle import ComputeRecord, ComputeState, transition
from pipeline.compute.request import ComputeRequest
from pipeline.events.models import Tier
from tests.chromium import headless_chromium, sign_in
from tests.chromium import wait_for as wait_until
from tests.pipeline.compute.test_lifecycle import OFFER
from tests.web.conftest import ADMIN, SECRET, FakeReadiness, fixed_quota, tenant_event
from tests.web.memory_state import MemoryState
from tests.web.test_dashboard import ServerThread
from web.auth import Authenticator
from web.server import build_root_app
from web.state import LiveUpdate

SCREENSHOT = Path("/tmp/dashboard-spend.png")
NOW = datetime.now(UTC).replace(microsecond=0)


def running(tenant_id: str, request_id: str, started: datetime, hours: float) -> ComputeRecord:
    """A running allocation at OFFER's 10 $/h."""
    request = ComputeRequest.model_validate(
        {"tenant_id": tenant_id, "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": hours})
    record = ComputeRecord.new(request_id, request, started)
    record = transition(record, ComputeState.ALLOCATING, started)
    record = transition(record, ComputeState.PROVISIONING, started, offer=OFFER, allocation_id=request_id,
                        price_per_hour=10.0)
    return transition(record, ComputeState.RUNNING, started)


@pytest.fixture
def chromium() -> Iterator[WebDriver]:
    with headless_chromium("dashboard-spend-") as driver:
        yield driver


@pytest.fixture
def served() -> Iterator[tuple[ServerThread, MemoryState, list[ComputeRecord]]]:
    state = MemoryState(quota_for_tier=fixed_quota, now=lambda: NOW)  # a fixed clock: the figures stay put
    records: list[ComputeRecord] = []
    state.compute_records = lambda: list(records)
    state.compute_budgets = {"globex": 200.0}
    server = ServerThread(build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None))
    server.start()
    try:
        yield server, state, records
    finally:
        server.stop()


def wait_for(driver: WebDriver, what: str, condition: Any) -> Any:
    return wait_until(driver, what, condition, 10, SCREENSHOT)


def spend_item(driver: WebDriver, tenant_id: str) -> Any:
    return next(iter(driver.find_elements(By.CSS_SELECTOR, f'#spend-list li[data-tenant-id="{tenant_id}"]')), None)


def test_the_spend_chart_shows_each_tenants_spend_against_its_budget_live(
    chromium: WebDriver, served: tuple[ServerThread, MemoryState, list[ComputeRecord]]
) -> None:
    server, state, records = served
    records.append(running("globex", "globex.r1", NOW - timedelta(hours=1), 6))  # 10 $ spent, 50 $ committed

    async def load() -> None:
        await state.submit_tenant(tenant_event("globex", Tier.ENTERPRISE, name="Globex"))
        await state.submit_tenant(tenant_event("acme", Tier.ENTERPRISE, name="Acme"))

    server.run(load)
    driver = chromium
    driver.get(f"{server.url}/ui/")
    sign_in(driver, ADMIN)
    item = wait_for(driver, "globex's spend", lambda d: spend_item(d, "globex"))
    assert "$10.00 spent + $50.00 committed of $200.00 (30 %)" in item.text
    wait_for(driver, "the spend chart", lambda d: d.find_elements(By.CSS_SELECTOR, "#spend-chart canvas"))
    legend = driver.find_element(By.ID, "spend-chart").text
    assert all(label in legend for label in ("spent + committed", "spent", "forecast", "budget"))
    assert spend_item(driver, "acme") is None  # no budget and nothing spent: not charted

    # the chart's figures are the REST API's
    api = driver.execute_script("""
        return fetch('/api/v1/tenants/globex/costs', {headers: {Authorization: 'Bearer ' +
            window.ProvisioningUi.token()}}).then((r) => r.json());""")
    assert api["spent_usd"] == pytest.approx(10.0) and api["committed_usd"] == pytest.approx(50.0)
    assert float(item.get_attribute("data-used")) == pytest.approx(api["spent_usd"] + api["committed_usd"])

    # acme allocates: its tenant event (a compute record changed) brings it into the chart
    records.append(running("acme", "acme.r1", NOW - timedelta(hours=2), 4))
    server.run(lambda: _publish(state, "acme"))
    acme = wait_for(driver, "acme's spend", lambda d: spend_item(d, "acme"))
    assert "$20.00 spent + $20.00 committed no budget" in acme.text
    series = driver.execute_script(
        "return window.ProvisioningSpend.spendSeries(Array.from(arguments[0]));",
        [{"tenant_id": "b", "costs": {"spent_usd": 1, "committed_usd": 2, "forecast_usd": 5, "budget_usd": 10}},
         {"tenant_id": "a", "costs": {"spent_usd": 0, "committed_usd": 0, "forecast_usd": 0, "budget_usd": None}},
         {"tenant_id": "c", "costs": None}])
    assert series["tenants"] == ["b"] and series["data"] == [[0], [3], [1], [5], [10]]
    driver.execute_script("document.getElementById('spend').scrollIntoView()")
    driver.save_screenshot(str(SCREENSHOT))
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors  # no script error, no Content-Security-Policy violation


async def _publish(state: MemoryState, tenant_id: str) -> None:
    state.publish(LiveUpdate("compute-records", tenant_id, {}))
