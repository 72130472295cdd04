"""The interactive API page ``/api/v1/docs``: Swagger UI served by the worker itself (no CDN), on the worker's own
OpenAPI document; public like that document. In headless Chromium it renders every operation, and "Try it out"
with a pasted token calls this worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.chromium import headless_chromium
from tests.chromium import wait_for as wait_until
from tests.web.conftest import ADMIN, SECRET, FakeReadiness, fixed_quota, tenant_event
from tests.web.memory_state import MemoryState
from tests.web.test_dashboard import ServerThread
from web.auth import Authenticator
from web.server import UI_DIR, build_root_app

VENDORED = UI_DIR / "vendor" / "swagger-ui"
JAVASCRIPT = {"text/javascript", "application/javascript"}  # as the machine's mime types name .js
ASSETS = {
    "/api/v1/docs/swagger-ui-bundle.js": (VENDORED / "swagger-ui-bundle.js", JAVASCRIPT),
    "/api/v1/docs/swagger-ui.css": (VENDORED / "swagger-ui.css", {"text/css"}),
    "/api/v1/docs/api-docs.js": (UI_DIR / "api-docs.js", JAVASCRIPT),
}
SCREENSHOT = Path("/tmp/api-docs.png")
WAIT_SECONDS = 20


async def test_the_page_and_its_assets_are_served_from_the_worker(client: TestClient) -> None:
    page = await client.get("/api/v1/docs")  # no token: the document it renders is public
    assert page.status == 200 and page.content_type == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    referenced = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    # same origin only: no CDN, no other host (the icon is an empty data: URL, so no request for /favicon.ico)
    assert referenced == {*ASSETS, "/api/v1/openapi.json", "data:,"}
    for path, (file, content_types) in ASSETS.items():
        response = await client.get(path)
        assert response.status == 200 and response.content_type in content_types, path
        assert await response.read() == file.read_bytes(), path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "url: \"/api/v1/openapi.json\"" in (UI_DIR / "api-docs.js").read_text()


def test_the_vendored_swagger_ui_says_where_it_comes_from() -> None:
    note = (VENDORED / "SOURCE.md").read_text()
    assert "swagger-ui-dist" in note and "5.35.0" in note
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
    # the bundle is the version the note names (Swagger UI writes its version into the bundle)
    assert 'PACKAGE_VERSION:"5.35.0"' in (VENDORED / "swagger-ui-bundle.js").read_text()


@pytest.fixture
def served() -> Iterator[tuple[ServerThread, MemoryState]]:
    state = MemoryState(quota_for_tier=fixed_quota)
    server = ServerThread(build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None))
    server.start()
    try:
        yield server, state
    finally:
        server.stop()


@pytest.fixture
def chromium() -> Iterator[WebDriver]:
    with headless_chromium("api-docs-chromium-") as driver:
        yield driver


def wait_for(driver: WebDriver, what: str, condition: Any) -> Any:
    return wait_until(driver, what, condition, WAIT_SECONDS, SCREENSHOT)


def test_swagger_ui_renders_the_operations_and_calls_the_worker(
    chromium: WebDriver, served: tuple[ServerThread, MemoryState]
) -> None:
    server, state = served
    server.run(lambda: state.submit_tenant(tenant_event("acme")))
    driver = chromium
    driver.get(f"{server.url}/api/v1/docs")
    wait_for(driver, "the operations of the OpenAPI document", lambda d: len(
        d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 9)
    summaries = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/tenants/{tenant_id}/quota" in summaries and "/provision" in summaries

    # Authorize with a bearer token, then "Try it out" on GET /tenants: the worker answers with the tenant.
    # Every step waits for what it acts on: Swagger UI renders each part after the click that opens it.
    def element(css: str, within: Any = None) -> Any:
        return wait_for(driver, css, lambda d: next(
            (e for e in (within or d).find_elements(By.CSS_SELECTOR, css) if e.is_displayed() and e.is_enabled()),
            None))

    element(".auth-wrapper .authorize").click()
    element(".modal-ux input").send_keys(ADMIN)
    element(".modal-ux .auth-btn-wrapper .authorize").click()
    element(".modal-ux .btn-done").click()
    wait_for(driver, "the closed dialog", lambda d: not d.find_elements(By.CSS_SELECTOR, ".modal-ux"))
    listing = element("#operations-default-list_tenants")
    element(".opblock-summary", listing).click()
    element(".try-out__btn", listing).click()
    element(".execute", listing).click()
    wait_for(driver, "the worker's answer", lambda d: '"tenant_id": "acme"' in listing.text)
    driver.save_screenshot(str(SCREENSHOT))
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors  # no script error, no Content-Security-Policy violation
