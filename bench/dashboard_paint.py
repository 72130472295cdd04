"""Dashboard first paint and live-update latency in headless Chromium, against a running worker.

Usage (a worker from ``make run`` on the default port, its development admin token in the environment)::

    PROVISIONING_TOKEN=$(.venv/bin/python -m pipeline dev-token) .venv/bin/python bench/dashboard_paint.py --runs 5

Each run opens ``/ui/`` in a fresh headless Chromium (Debian's ``chromium`` and ``chromium-driver``) and reads:

* **first paint**: the page's ``first-contentful-paint`` (Paint Timing API, from navigation start);
* **connected**: navigation start until the live connection shows ``live`` after the token is pasted;
* **update**: from the moment the page itself sends ``POST /api/v1/provision`` for a new tenant until that
  tenant's row is in the table (a ``MutationObserver`` in the page; one clock, the browser's): the REST call,
  Pulsar, the bridge, the tenant agent, the tables and the server-sent events are all in between.

The tenants it creates are named ``bench-paint-<hex>`` and deleted at the end (``--keep`` keeps them).
Prints a table (median and each run) or ``--json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

#: Runs in the page: sends the provision call and resolves with the ms until the tenant's row appears.
UPDATE_SCRIPT = """
const [tenant, token, done] = arguments;
const tbody = document.querySelector('tbody') || document.body;
const start = performance.now();
const seen = () => document.querySelector(`tr[data-tenant-id="${CSS.escape(tenant)}"]`);
const observer = new MutationObserver(() => {
  if (seen()) { observer.disconnect(); done({ms: performance.now() - start}); }
});
observer.observe(document.body, {childList: true, subtree: true});
fetch('/api/v1/provision', {method: 'POST', headers: {'Authorization': 'Bearer ' + token,
  'Content-Type': 'application/json'},
  body: JSON.stringify({tenant_id: tenant, name: tenant, tier: 'standard', owner_user_id: 'bench'})})
  .then(r => { if (!r.ok) { observer.disconnect(); done({error: 'provision answered ' + r.status}); } })
  .catch(e => { observer.disconnect(); done({error: String(e)}); });
"""


def _driver(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                "--disable-background-networking", f"--user-data-dir={profile}", "--window-size=1440,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def one_run(url: str, token: str, timeout: float) -> dict[str, Any]:
    profile = tempfile.mkdtemp(prefix="bench-paint-")
    driver = _driver(profile)
    tenant = f"bench-paint-{uuid.uuid4().hex[:10]}"
    try:
        driver.set_script_timeout(timeout)
        driver.get(f"{url}/ui/")
        paint = driver.execute_script(
            "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "connect").click()
        WebDriverWait(driver, timeout, poll_frequency=0.02).until(
            lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
        connected = driver.execute_script("return performance.now();")
        update = driver.execute_async_script(UPDATE_SCRIPT, tenant, token)
        if "error" in update:
            raise RuntimeError(update["error"])
        return {"tenant": tenant, "first_paint_ms": paint, "connected_ms": connected, "update_ms": update["ms"]}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def delete_tenant(url: str, token: str, tenant: str) -> None:
    try:
        requests.delete(f"{url}/api/v1/tenants/{tenant}", headers={"Authorization": f"Bearer {token}"},
                        timeout=30).raise_for_status()
    except requests.RequestException as exc:
        sys.stderr.write(f"could not delete {tenant}: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:6066")
    parser.add_argument("--token", help="a platform-admin token (default: $PROVISIONING_TOKEN)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="keep the tenants it creates")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    token = args.token or _env_token()
    if not token:
        parser.error("give --token or set PROVISIONING_TOKEN (python -m pipeline dev-token prints one)")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        parser.error(f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)")
    runs = []
    for _ in range(args.runs):
        runs.append(one_run(args.url, token, args.timeout))
        time.sleep(0.5)
    if not args.keep:
        for run in runs:
            delete_tenant(args.url, token, run["tenant"])
    summary = {key: statistics.median(r[key] for r in runs if r[key] is not None)
               for key in ("first_paint_ms", "connected_ms", "update_ms")}
    if args.json:
        print(json.dumps({"median": summary, "runs": runs}, indent=2))
        return 0
    print(f"{'':14}{'median':>10}  each run (ms)")
    for key, label in (("first_paint_ms", "first paint"), ("connected_ms", "connected"), ("update_ms", "update")):
        each = "  ".join(f"{r[key]:.0f}" if r[key] is not None else "-" for r in runs)
        print(f"{label:14}{summary[key]:>10.0f}  {each}")
    return 0


def _env_token() -> str | None:
    import os  # a benchmark script, outside the service: reading the environment here is fine

    return os.environ.get("PROVISIONING_TOKEN")


if __name__ == "__main__":
    sys.exit(main())
