"""The dashboard's charts in headless Chromium: a tenant's utilization windows, the replicas its scaling
decisions chose, the decisions that changed something (each linked to its explanation) and its policies,
all read from the REST API of a server over the in-memory state and the real scaling engine."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from pipeline.events.models import ResourceMetrics, ScalingRequest, Tier
from tests.chromium import headless_chromium, sign_in
from tests.chromium import wait_for as wait_until
from tests.web.conftest import ADMIN, SECRET, FakeReadiness, fixed_quota, tenant_event
from tests.web.memory_state import MemoryState
from tests.web.test_dashboard import ServerThread
from web.auth import Authenticator
from web.scaling import EngineBackend, scaling_operations
from web.server import build_root_app

SCREENSHOT = Path("/tmp/dashboard-charts.png")
POLICY = {"policy_id": "cpu-target", "tenant_id": "globex", "workload": "train", "kind": "target_tracking",
          "target_utilization": 0.6, "min_replicas": 1, "max_replicas": 8}


@pytest.fixture
def chromium() -> Iterator[WebDriver]:
    with headless_chromium("dashboard-charts-") as driver:
        yield driver


@pytest.fixture
def served() -> Iterator[tuple[ServerThread, MemoryState]]:
    state = MemoryState(quota_for_tier=fixed_quota)
    app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None,
                         extra_operations=scaling_operations(EngineBackend(state.scaling_engine), state))
    server = ServerThread(app)
    server.start()
    try:
        yield server, state
    finally:
        server.stop()


def wait_for(driver: WebDriver, what: str, condition: Any) -> Any:
    return wait_until(driver, what, condition, 10, SCREENSHOT)


def post_policy(url: str) -> None:
    request = urllib.request.Request(  # noqa: S310 - the test's own loopback server
        f"{url}/api/v1/scaling/policies", data=json.dumps(POLICY).encode(), method="POST",
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 202


def test_a_tenants_charts_show_its_windows_decisions_and_policies(
    chromium: WebDriver, served: tuple[ServerThread, MemoryState]
) -> None:
    server, state = served
    now = datetime.now(UTC)

    async def load() -> None:
        await state.submit_tenant(tenant_event("globex", Tier.ENTERPRISE, name="Globex"))
        for i, cores in enumerate((2.0, 3.5, 5.0, 4.0)):
            state.record_usage(ResourceMetrics(
                event_id=f"m{i}", tenant_id="globex", occurred_at=now - timedelta(hours=2) + timedelta(minutes=30 * i),
                workload="train", cpu_cores=cores, memory_gib=8, gpus=1, replicas=3))
        state.add_deployment("globex", "train", replicas=3, cpu=1, gpus=0)
        state.request_scaling(ScalingRequest(event_id="s1", tenant_id="globex", occurred_at=now,
                                             workload="train", desired_replicas=5, reason="nightly batch"))

    server.run(load)
    post_policy(server.url)

    driver = chromium
    driver.get(f"{server.url}/ui/")
    sign_in(driver, ADMIN)
    wait_for(driver, "the tenant row", lambda d: d.find_elements(By.CSS_SELECTOR, 'button[data-charts="globex"]'))
    driver.find_element(By.CSS_SELECTOR, 'button[data-charts="globex"]').click()
    wait_for(driver, "the workload's chart", lambda d: d.find_elements(
        By.CSS_SELECTOR, '#charts-body .chart[data-workload="train"] canvas'))
    assert not driver.find_element(By.ID, "charts").get_attribute("hidden")
    assert driver.find_element(By.ID, "charts-tenant").text == "globex"
    legend = driver.find_element(By.CSS_SELECTOR, '.chart[data-workload="train"]').text
    assert all(label in legend for label in ("demand (cores)", "forecast low", "replicas decided", "scaled"))

    # the request's decision, linked to its explanation
    decision = wait_for(driver, "the applied decision", lambda d: next(
        (li for li in d.find_elements(By.CSS_SELECTOR, ".decisions li.decision") if "3 → 5" in li.text), None))
    assert "request" in decision.text and "applied" in decision.text
    decision.find_element(By.CSS_SELECTOR, "a.decision-link").click()
    assert driver.execute_script("return location.hash") == f"#decision-{decision.get_attribute('data-decision-id')}"
    decision.find_element(By.TAG_NAME, "summary").click()
    assert "request s1" in decision.find_element(By.CSS_SELECTOR, ".explanation").text

    # the chart's demand series is the API's windows, in time order
    answer = driver.execute_script("""
        return fetch('/api/v1/tenants/globex/utilization', {headers: {Authorization: 'Bearer ' +
            sessionStorage.getItem('provisioning.accessToken')}}).then((r) => r.json()).then((u) =>
            ({windows: u.workloads.train,
              demand: window.ProvisioningCharts.workloadSeries(u.workloads.train, [])[1]}));""")
    assert answer["windows"], "the utilization API returned no window"
    assert answer["demand"] == [w["cpu_cores_mean"] for w in sorted(answer["windows"], key=lambda w: w["end"])]

    wait_for(driver, "the policy table", lambda d: d.find_elements(
        By.CSS_SELECTOR, '#charts-policies tr[data-policy-id="cpu-target"]'))
    assert "target_tracking" in driver.find_element(By.ID, "charts-policies").text
    driver.execute_script("document.getElementById('charts').scrollIntoView()")
    driver.save_screenshot(str(SCREENSHOT))
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors  # no script error, no Content-Security-Policy violation


def test_the_forecast_band_is_drawn_one_window_after_the_decision_that_saw_it(
    chromium: WebDriver, served: tuple[ServerThread, Any]
) -> None:
    server, _state = served
    chromium.get(f"{server.url}/ui/")
    windows = [{"end": "2026-01-01T10:00:00Z", "cpu_cores_mean": 2.0}, {"end": "2026-01-01T10:30:00Z",
                                                                         "cpu_cores_mean": 3.0}]
    decisions = [{"applied": True, "decision": {
        "at": "2026-01-01T10:30:00Z", "action": "scale_up", "desired_replicas": 4,
        "forecast": {"interval_minutes": 30, "quantiles": {"0.9": [3.6, 4.0], "0.1": [2.4, 2.0], "0.5": [3.0]}}}},
        {"applied": False, "decision": {"at": "2026-01-01T10:00:00Z", "action": "hold", "desired_replicas": 3,
                                        "forecast": None}}]
    series = chromium.execute_script(
        "return window.ProvisioningCharts.workloadSeries(arguments[0], arguments[1]);", windows, decisions)
    t0 = int(datetime(2026, 1, 1, 10, tzinfo=UTC).timestamp())
    assert series == [
        [t0, t0 + 1800, t0 + 3600],
        [2.0, 3.0, None],  # demand at each window's end
        [None, None, 2.4],  # the lowest quantile's next-window value, at the next window
        [None, None, 3.6],  # the highest
        [3, 4, None],  # replicas decided
        [None, 4, None],  # only the decision that changed something is marked
    ]
