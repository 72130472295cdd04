"""The dashboard in headless Chromium: it shows a tenant, and follows its changes, without a reload.

The root app is served with in-memory state on 127.0.0.1 (its own event loop in a thread, since Selenium's
calls block); changes are made through the gateway and the state, the same way events change the tables.
Needs Debian's ``chromium`` and ``chromium-driver`` packages (``make`` installs them); fails if they are
missing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from pipeline.events.models import ResourceAnomaly, ResourceMetrics, ScalingRequest, Severity, Tier
from pipeline.tenants.logic import TENANT_RESOURCES
from pipeline.tenants.models import ResourceState
from tests.chromium import WINDOW_SIZE, badge_states, headless_chromium, sign_in
from tests.chromium import wait_for as wait_until
from tests.web.conftest import ADMIN, SECRET, FakeReadiness, fixed_quota, tenant_event
from tests.web.memory_state import MemoryState
from web.auth import Authenticator
from web.server import build_root_app

SCREENSHOT = Path("/tmp/dashboard.png")
WAIT_SECONDS = 10

T = TypeVar("T")
PROGRESS = {
    "kubernetes": "ready", "cassandra": "ready", "s3": "ready", "pulsar": "waiting",
    "ignite": "provisioning", "elasticsearch": "retrying", "openproject": "failed",
}


class ServerThread:
    """An aiohttp app on 127.0.0.1:<ephemeral> in its own loop, with a way to run coroutines there."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dashboard-server", daemon=True)
        self.runner = web.AppRunner(app, shutdown_timeout=2)
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        self.run(self._start)

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)

    def stop(self) -> None:
        self.run(self.runner.cleanup)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def chromium() -> Iterator[WebDriver]:
    with headless_chromium("dashboard-chromium-") as driver:
        yield driver


@pytest.fixture
def served() -> Iterator[tuple[ServerThread, MemoryState]]:
    state = MemoryState(quota_for_tier=fixed_quota)
    server = ServerThread(build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None))
    server.start()
    try:
        yield server, state
    finally:
        server.stop()


def wait_for(driver: WebDriver, what: str, condition: Callable[[WebDriver], Any]) -> Any:
    return wait_until(driver, what, condition, WAIT_SECONDS)


def test_the_dashboard_follows_the_state_live(chromium: WebDriver, served: tuple[ServerThread, MemoryState]):
    server, state = served
    driver = chromium
    driver.get(f"{server.url}/ui/")
    assert driver.title.startswith("Tenant provisioning")

    sign_in(driver, ADMIN)
    wait_for(driver, "a live connection", lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
    assert "root-admin" in driver.find_element(By.ID, "who").text
    assert driver.execute_script("return sessionStorage.getItem('provisioning.accessToken')") == ADMIN
    assert driver.find_element(By.ID, "token").get_attribute("value") == ""

    # a tenant arrives the way the tenant-created event would bring it
    server.run(lambda: state.submit_tenant(tenant_event("acme", Tier.STANDARD, name="Acme Corporation")))
    wait_for(driver, "the new tenant with its pending resources",
             lambda d: badge_states(d, "acme") == dict.fromkeys(TENANT_RESOURCES, "pending"))
    wait_for(driver, "the tenant's row", lambda d: all(
        text in d.find_element(By.CSS_SELECTOR, 'tr[data-tenant-id="acme"]').text
        for text in ("Acme Corporation", "standard", "in-progress")))

    # the executor reports progress; usage, an anomaly and a scaling event come in
    async def progress() -> None:
        await state.submit_tenant(tenant_event("globex", Tier.ENTERPRISE, name="Globex"))
        now = datetime.now(UTC)
        for resource, target in PROGRESS.items():
            error = {"elasticsearch": "cluster yellow", "openproject": "HTTP 500 from OpenProject",
                     "pulsar": "waiting for backend pulsar at http://127.0.0.1:8080"}.get(resource)
            state.set_resource_status("acme", resource, ResourceState(target), error)
        state.record_usage(ResourceMetrics(event_id="m1", tenant_id="acme", occurred_at=now, workload="api",
                                           cpu_cores=3.2, memory_gib=6, gpus=0, replicas=4))
        state.record_usage(ResourceMetrics(event_id="m2", tenant_id="globex", occurred_at=now, workload="train",
                                           cpu_cores=12, memory_gib=96, gpus=3, replicas=3))
        state.record_anomaly(ResourceAnomaly(
            event_id="a1", tenant_id="acme", occurred_at=now, resource_type="pod", resource_id="api-7f9c",
            anomaly_type="cpu-spike", severity=Severity.HIGH, value=0.97))
        state.add_deployment("globex", "train", replicas=3, cpu=4, gpus=1)  # one replica: 4 cores, 1 GPU
        state.request_scaling(ScalingRequest(event_id="s1", tenant_id="globex", occurred_at=now,
                                             workload="train", desired_replicas=12, reason="batch backlog"))

    server.run(progress)
    expected = {**dict.fromkeys(TENANT_RESOURCES, "pending"), **PROGRESS}
    wait_for(driver, "the resource status changes", lambda d: badge_states(d, "acme") == expected)
    wait_for(driver, "the second tenant", lambda d: len(badge_states(d, "globex")) == len(TENANT_RESOURCES))
    wait_for(driver, "the anomaly", lambda d: "cpu-spike" in d.find_element(By.ID, "anomalies").text)
    wait_for(driver, "the scaling events", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#scaling li")) == 2)
    wait_for(driver, "both scaling events, the quota cap included", lambda d: all(  # 12 replicas exceed it
        text in d.find_element(By.ID, "scaling").text for text in ("api-7f9c", "train", "capped at 4 by quota")))
    wait_for(driver, "the cpu usage against the quota", lambda d: "3.2 / 4 cores" in d.find_element(
        By.CSS_SELECTOR, 'tr[data-tenant-id="acme"] [data-quota="cpu_cores"]').text)
    wait_for(driver, "the overall status", lambda d: d.find_element(
        By.CSS_SELECTOR, 'tr[data-tenant-id="acme"] [data-overall]').get_attribute("data-overall") == "failed")
    wait_for(driver, "the rows in tenant order", lambda d: [
        r.get_attribute("data-tenant-id") for r in d.find_elements(By.CSS_SELECTOR, "#tenant-rows tr")
    ] == ["acme", "globex"])

    driver.set_window_size(*WINDOW_SIZE)
    driver.save_screenshot(str(SCREENSHOT))
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors  # no script error, no Content-Security-Policy violation


def test_a_refused_token_is_explained(chromium: WebDriver, served: tuple[ServerThread, MemoryState]):
    server, _state = served
    driver = chromium
    driver.get(f"{server.url}/ui/")
    sign_in(driver, "not-a-token")
    wait_for(driver, "the refusal", lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "refused")
    assert "malformed token" in driver.find_element(By.ID, "message").text
