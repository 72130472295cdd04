"""Headless Chromium for the dashboard tests, driven by Selenium through Debian's ``chromium-driver``.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``make system-deps``); a test that asks for it
fails, naming the missing files, when they are not installed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_SIZE = (1440, 900)


@contextmanager
def headless_chromium(profile_prefix: str) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile (removed afterwards) that records every browser log entry."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"headless Chromium is needed but {', '.join(missing)} is missing: "
                    "install Debian's packages with `apt-get install -y chromium chromium-driver`", pytrace=False)
    profile = tempfile.mkdtemp(prefix=profile_prefix)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    width, height = WINDOW_SIZE
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, what: str, condition: Callable[[WebDriver], Any], seconds: float,
             screenshot: Path | None = None) -> Any:
    """Wait until ``condition(driver)`` is truthy; else fail with the page text, the browser log (and a
    screenshot)."""
    try:
        # The page re-renders rows on every update: an element found a moment ago may be gone.
        return WebDriverWait(
            driver, seconds, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
        ).until(condition)
    except Exception as exc:
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
        logs = "\n".join(str(entry) for entry in driver.get_log("browser"))  # type: ignore[no-untyped-call]
        page = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"the dashboard did not show {what} within {seconds} s ({exc!r}); screenshot {screenshot}\n"
                    f"page text:\n{page}\nbrowser log:\n{logs}")


def sign_in(driver: WebDriver, token: str) -> None:
    """Paste ``token`` into the open dashboard and connect (the caller waits for the outcome)."""
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "connect").click()


def badge_states(driver: WebDriver, tenant_id: str) -> dict[str, str]:
    """The status shown for each resource of ``tenant_id``'s row."""
    badges = driver.find_elements(By.CSS_SELECTOR, f'tr[data-tenant-id="{tenant_id}"] [data-resource]')
    return {b.get_attribute("data-resource") or "": b.get_attribute("data-status") or "" for b in badges}
