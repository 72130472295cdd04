"""The live dashboard of a real worker in headless Chromium: an event published on Pulsar changes the page.

A worker (``python -m pipeline worker``: bridge on, executor off, RocksDB tables) runs on the module's own
event plane (``event_plane`` in ``conftest.py``: a Kafka broker started for the module and a fresh Pulsar
namespace; on the shared broker a fresh worker would first replay every tenant-created event earlier runs
left there). Chromium opens ``/ui/`` and connects with a platform-admin token. The test then publishes a
tenant-created event with pulsar-client, and the page must show the new tenant with every resource
``pending`` without a reload: the bridge, the agent, the tables and the server-sent events all sit in
between. A screenshot is saved to ``/tmp/dashboard-live.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``make system-deps``); fails if they are missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from devstack.harness.worker import WorkerProcess
from pipeline.tenants.logic import TENANT_RESOURCES
from tests.chromium import badge_states, headless_chromium, sign_in
from tests.chromium import wait_for as wait_until
from tests.integration.conftest import now_iso

pytestmark = pytest.mark.integration

SCREENSHOT = Path("/tmp/dashboard-live.png")
WAIT_SECONDS = 20


@pytest.fixture
def chromium() -> Iterator[webdriver.Chrome]:
    with headless_chromium("dashboard-live-chromium-") as driver:
        yield driver


def wait_for(driver: WebDriver, what: str, condition: Callable[[WebDriver], Any]) -> Any:
    return wait_until(driver, what, condition, WAIT_SECONDS, SCREENSHOT)


def test_a_tenant_created_on_pulsar_appears_on_the_live_dashboard(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    chromium: webdriver.Chrome, admin_token: str, run_id: str,
) -> None:
    worker = start_worker(stream_env)
    worker.wait_ready()
    driver = chromium
    driver.get(f"{worker.url}/ui/")
    assert driver.title.startswith("Tenant provisioning")
    sign_in(driver, admin_token)
    wait_for(driver, "a live connection", lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
    tenant = f"t{run_id}-live"
    assert not driver.find_elements(By.CSS_SELECTOR, f'tr[data-tenant-id="{tenant}"]')

    publish("tenant-created-events", {
        "event_id": f"{tenant}-created", "tenant_id": tenant, "occurred_at": now_iso(),
        "name": "Live Dashboard Corp", "tier": "enterprise", "owner_user_id": "owner",
    })

    wait_for(driver, "the new tenant with every resource pending",
             lambda d: badge_states(d, tenant) == dict.fromkeys(TENANT_RESOURCES, "pending"))
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-tenant-id="{tenant}"]')
    assert "Live Dashboard Corp" in row.text and "enterprise" in row.text
    assert row.find_element(By.CSS_SELECTOR, "[data-overall]").get_attribute("data-overall") == "in-progress"
    driver.save_screenshot(str(SCREENSHOT))
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]  # type: ignore[no-untyped-call]
    assert errors == [], errors
