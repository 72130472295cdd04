"""The real local Prometheus answers queries and scrapes the worker's /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import yaml

from devstack.prometheus import ALERT_RULES, Prometheus

pytestmark = pytest.mark.integration


async def _get(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]


async def test_prometheus_answers_a_query(prometheus_service: dict[str, str]) -> None:
    url = prometheus_service["PROMETHEUS_URL"]
    async with aiohttp.ClientSession() as session:
        data = await _get(session, f"{url}/api/v1/query", query="6 * 7")
        assert data["resultType"] == "scalar"
        assert float(data["result"][1]) == 42.0

        # Its own scrape job yields a real series; the first scrape comes within one interval.
        query = 'up{job="prometheus"}'
        result: list[dict[str, Any]] = []
        for _ in range(120):
            result = (await _get(session, f"{url}/api/v1/query", query=query))["result"]
            if result:
                break
            await asyncio.sleep(0.5)
        assert result, f"no sample for {query} after 60 s"
        assert result[0]["value"][1] == "1"


async def test_prometheus_scrapes_the_worker_metrics(prometheus_service: dict[str, str]) -> None:
    url = prometheus_service["PROMETHEUS_URL"]
    async with aiohttp.ClientSession() as session:
        data = await _get(session, f"{url}/api/v1/targets")
    worker = [t for t in data["activeTargets"] if t["labels"]["job"] == "provisioning-worker"]
    assert [t["scrapeUrl"] for t in worker] == [f"http://{Prometheus().scrape_target()}/metrics"]


async def test_prometheus_loads_the_service_alert_rules(prometheus_service: dict[str, str]) -> None:
    expected = {group["name"] for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]}
    url = prometheus_service["PROMETHEUS_URL"]
    async with aiohttp.ClientSession() as session:
        data = await _get(session, f"{url}/api/v1/rules", type="alert")
    loaded = {group["name"] for group in data["groups"]}
    assert expected <= loaded, f"alert groups loaded {sorted(loaded)}; a Prometheus started before the rules " \
                               "existed needs a restart (python -m devstack down prometheus)"
