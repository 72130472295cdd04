"""Latency of ``POST /api/v1/compute/quote`` over HTTP: p50/p90/p99/max over ``--requests`` quotes, printed as
a table (``--json`` for the numbers as JSON).

Two targets:

* default, in process: the worker's web application (authentication, authorization, audit middleware, the
  compute routes) over a real compute runtime with the packaged catalogs (Lambda, Nebius, Verda: 532 offers)
  and the derivatives-engine stand-in, in-memory tenant state (the test harness's ``MemoryState``), served
  on 127.0.0.1 and called through a real socket by an aiohttp client;
* ``--url http://127.0.0.1:8080 --token $TOKEN --tenant acme``: a running worker (the tenant must exist).

The requests cycle through a fixed mix (GPU types and counts, CPU-only, spot allowed, allow lists, a price cap,
durations), so a quote ranks a different slice of the catalog each time. ``--concurrency`` clients send at
once. Nothing is allocated or stored (that is the point of a quote).

    .venv/bin/python -m bench.compute_quote [--requests 2000] [--concurrency 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

#: The request mix (``tenant_id`` is added).
MIX: list[dict[str, Any]] = [
    {"resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6, "purpose": "training"},
    {"resources": {"gpu": {"type": "H100", "count": 1}}, "duration_hours": 2, "spot_allowed": True},
    {"resources": {"gpu": {"type": "A100", "count": 8}, "memory_gib": 512}, "duration_hours": 24},
    {"resources": {"vcpus": 16, "memory_gib": 64}, "duration_hours": 1, "purpose": "batch"},
    {"resources": {"gpu": {"type": "H200", "count": 8}}, "duration_hours": 72, "providers": ["nebius", "lambda"]},
    {"resources": {"gpu": {"type": "H100", "count": 2}}, "duration_hours": 3, "max_price_per_hour": 8.0},
    {"resources": {"gpu": {"type": "B200", "count": 8}}, "duration_hours": 12, "spot_allowed": True},
    {"resources": {"vcpus": 2}, "duration_hours": 0.5, "exclude_providers": ["verda"]},
]


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


@contextlib.asynccontextmanager
async def in_process_worker() -> AsyncIterator[tuple[str, str, str]]:
    """(base URL, admin token, tenant id) of the worker's web app served in this process."""
    from aiohttp.test_utils import TestServer

    from pipeline.compute.catalog import load_catalogs
    from pipeline.compute.factory import catalog_paths
    from pipeline.config import Settings
    from pipeline.events.models import Tier
    from tests.pipeline.compute.support import runtime_env
    from tests.web.conftest import ADMIN, SECRET, FakeReadiness, fixed_quota, tenant_event
    from tests.web.memory_state import MemoryState
    from web.auth import Authenticator
    from web.compute import ComputeApi, LocalCompute, operations
    from web.server import build_root_app

    state = MemoryState(quota_for_tier=fixed_quota)
    await state.submit_tenant(tenant_event("bench", Tier.ENTERPRISE))
    offers = load_catalogs(catalog_paths(Settings(compute_catalog_dir=None)))

    def quota_gpus(tenant_id: str) -> int | None:
        quota = state.stores.quotas.get(tenant_id)
        return quota.limits.gpus if quota is not None else None

    async with runtime_env(offers, quota_gpus=quota_gpus, quota_records=state.stores.quotas.get) as compute:
        local = LocalCompute(compute.runtime, state.stores.tenants.get)
        app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None,
                             extra_operations=operations(ComputeApi(local, None, provision_wait_s=0)))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            yield str(server.make_url("")).rstrip("/"), ADMIN, "bench"
            if compute.written or compute.standin.engine.allocate_calls:
                raise SystemExit("a quote stored or allocated something")
        finally:
            await server.close()


async def measure(url: str, token: str, tenant: str, requests: int, concurrency: int) -> dict[str, Any]:
    bodies = [{**body, "tenant_id": tenant} for body in MIX]
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    failures: dict[int, int] = {}
    feasible = 0
    counter = iter(range(requests))

    async with aiohttp.ClientSession(headers=headers) as session:
        async def one(body: dict[str, Any]) -> tuple[float, int, Any]:
            started = time.perf_counter()
            async with session.post(f"{url}/api/v1/compute/quote", json=body) as response:
                answer = await response.json(content_type=None)
            return time.perf_counter() - started, response.status, answer

        for body in bodies:  # warm-up: one of each, not counted
            await one(body)

        async def client() -> None:
            nonlocal feasible
            for n in counter:
                elapsed, status, answer = await one(bodies[n % len(bodies)])
                if status != 200:
                    failures[status] = failures.get(status, 0) + 1
                    continue
                latencies.append(elapsed * 1000)
                feasible += bool(answer.get("feasible"))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    if not latencies:
        raise SystemExit(f"no quote succeeded: {failures}")
    ordered = sorted(latencies)
    return {
        "requests": requests, "concurrency": concurrency, "ok": len(latencies), "failed_by_status": failures,
        "feasible": feasible, "p50_ms": round(percentile(ordered, 0.50), 2),
        "p90_ms": round(percentile(ordered, 0.90), 2), "p99_ms": round(percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2), "mean_ms": round(statistics.fmean(ordered), 2),
        "quotes_per_s": round(len(latencies) / wall, 1),
    }


def table(result: dict[str, Any]) -> str:
    columns = ["requests", "concurrency", "ok", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "quotes_per_s"]
    cells = [[c.upper() for c in columns], [str(result[c]) for c in columns]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([f"POST /api/v1/compute/quote against {result['target']} ({result['machine']})", *lines])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        if not args.token or not args.tenant:
            raise SystemExit("--url needs --token and --tenant")
        result = await measure(args.url.rstrip("/"), args.token, args.tenant, args.requests, args.concurrency)
        target = args.url
    else:
        async with in_process_worker() as (url, token, tenant):
            result = await measure(url, token, tenant, args.requests, args.concurrency)
        target = "the in-process worker app"
    machine = f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    return {**result, "target": target, "machine": machine, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Quotes to time (default 2000).")
    parser.add_argument("--concurrency", type=int, default=1, help="Clients sending at once (default 1).")
    parser.add_argument("--url", default=None, help="A running worker's base URL (default: in process).")
    parser.add_argument("--token", default=None, help="Bearer token for --url.")
    parser.add_argument("--tenant", default=None, help="An existing tenant for --url.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of the table.")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 1_000_000 or not 1 <= args.concurrency <= 256:
        parser.error("--requests 1..1000000, --concurrency 1..256")
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2) if args.json else table(result))
    print(f"load average after the run: {result['loadavg']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
