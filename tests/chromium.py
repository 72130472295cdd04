"""Headless Chromium for the dashboard tests, driven by Selenium through Debian's ``chromium-driver``.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``make system-deps``); a test that asks for it
fails, naming the missing files, when they are not installed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

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
