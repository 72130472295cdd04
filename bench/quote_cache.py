"""Engine calls and latency of provision/quote requests with the workers' shared quote cache (Ignite) on and off.

Setup: ``--workers`` compute runtimes in this process stand for the workers (each its own offer book, engine
client and, with the cache on, its own Ignite client), with ``COMPUTE_QUOTE_ON_REQUEST`` on: every provision and
quote first asks for a current quote of the request's GPU type, providers and regions. The engine is the
derivatives-engine stand-in (devstack's ``derivatives`` service code, ``python -m devstack.derivatives_standin``)
started as a process of its own on a free port, with ample capacity, so that the allocations of this benchmark
never touch the shared stack's stand-in. The cache is the shared stack's Ignite (``IGNITE_HOST``/``IGNITE_PORT``)
with a cache of this run's own (``service_bench_*``, destroyed at the end).

``--requests`` requests of the request mix of ``bench.compute_quote`` (GPU types and counts, CPU-only, spot,
allow lists, a price cap; shape and worker drawn by a seeded random generator), every ``--provision-every``-th
one a provision (allocated until running, then terminated outside the timed part) and the others quotes, go to
the workers ``--concurrency`` at a time. Three runs send the same sequence: cache ``off`` (every request asks the
engine), ``local`` (each worker keeps the quotes it got for the TTL, no Ignite: what the near copies alone save)
and ``shared`` (Ignite). Measured: engine quote calls (and all engine calls) during the run, the cache's hit
rate, p50/p99 latency of quotes and of provisions.

    .venv/bin/python -m bench.quote_cache [--requests 600] [--workers 2] [--concurrency 4] [--rate 0] [--ttl 15]
        [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.compute_quote import MIX, percentile
from pipeline.compute.catalog import PACKAGED_CATALOG_DIR, load_catalogs, real_catalog_paths
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.factory import build_runtime
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.optimizer import NoFeasibleOffer
from pipeline.compute.quote_cache import CachedQuotes
from pipeline.compute.record_store import apply_record
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import new_request_id
from pipeline.compute.runtime import ComputeRuntime
from pipeline.config import Settings
from pipeline.events.models import ProvisioningStatusEvent
from pipeline.shared_cache import IgniteSharedCache, NullCache, SharedCache
from pipeline.tenants.models import QuotaRecord
from pipeline.typed_table import TypedTable
from tests.pipeline.compute.support import FAST_SETTINGS, UNLIMITED

TENANT = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def standin_process(capacity: int) -> AsyncIterator[str]:
    """The stand-in engine as a process of its own; its base URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack.derivatives_standin", "--port", str(port), "--capacity", str(capacity),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/v1/health") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the stand-in did not start")
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


@dataclass
class Worker:
    runtime: ComputeRuntime
    engine: DerivativesEngineClient
    quotes: CachedQuotes | None
    cache: SharedCache | None


def build_worker(url: str, cache: SharedCache | None, ttl_s: float) -> Worker:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord, "compute-records")
    holder: list[ComputeRuntime] = []

    async def send_record(record: ComputeRecord) -> None:  # what the compute-records agent does
        apply_record(table, record)
        holder[0].store.applied(record)

    async def send_status(_event: ProvisioningStatusEvent) -> None:
        return None

    settings = Settings(**{**FAST_SETTINGS, "compute_quote_on_request": True, "shared_cache_quote_ttl_seconds": ttl_s})
    engine = DerivativesEngineClient(url, allocate_timeout_s=5.0)
    quota = QuotaRecord(tenant_id=TENANT, limits=UNLIMITED, updated_at=datetime.now(UTC), updated_by="bench")
    runtime = build_runtime(
        settings, table=table, send_record=send_record, send_status=send_status,
        quota_gpus=lambda _tenant: 10**6, quotas=lambda _tenant: quota, engine=engine,
        offers=load_catalogs(real_catalog_paths(PACKAGED_CATALOG_DIR)), shared_cache=cache,
    )
    holder.append(runtime)
    quotes = runtime.quotes if isinstance(runtime.quotes, CachedQuotes) else None
    return Worker(runtime, engine, quotes, cache)


@dataclass
class Run:
    quote_ms: list[float] = field(default_factory=list)
    provision_ms: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)


async def one_request(worker: Worker, index: int, shape: int, provision_every: int, run: Run) -> None:
    body = {**MIX[shape], "tenant_id": TENANT}
    request = ComputeRequest.model_validate(body)
    runtime = worker.runtime
    if provision_every and index % provision_every == provision_every - 1:
        request_id = new_request_id(TENANT)
        started = time.perf_counter()
        try:
            outcome = await runtime.provision(request_id, request, wait_s=30.0)
            state = outcome.record.state.value
        except NoFeasibleOffer:
            state = "infeasible"
        run.provision_ms.append((time.perf_counter() - started) * 1000)
        run.outcomes[state] = run.outcomes.get(state, 0) + 1
        if state != "infeasible":
            await runtime.terminate(request_id)  # frees the stand-in's capacity; not timed
        return
    started = time.perf_counter()
    await runtime.refresh_for(request)  # what the quote route does before deciding
    runtime.quote(request)
    run.quote_ms.append((time.perf_counter() - started) * 1000)


#: off: every request asks the engine; local: each worker keeps its own quotes for the TTL (no Ignite);
#: shared: the Ignite cache (and each worker's near copies).
MODES = ("off", "local", "shared")


async def measure(url: str, mode: str, args: argparse.Namespace, cache_name: str) -> dict[str, Any]:
    settings = Settings()
    workers = []
    for _ in range(args.workers):
        cache: SharedCache | None = None
        if mode == "shared":
            cache = IgniteSharedCache(settings.ignite_host, settings.ignite_port, cache_name, label="bench",
                                      timeout_s=settings.shared_cache_timeout_seconds)
        elif mode == "local":
            cache = NullCache()
        workers.append(build_worker(url, cache, args.ttl))
    for worker in workers:  # as a worker starts: its first full quote, its connection to Ignite (not measured)
        await worker.runtime.refresh_offers()
        if isinstance(worker.cache, IgniteSharedCache):
            await worker.cache.connect()
    calls_before = [dict(w.engine.calls) for w in workers]
    for worker in workers:  # count the measured requests' lookups only
        if worker.quotes is not None:
            worker.quotes.hits = worker.quotes.near_hits = worker.quotes.misses = worker.quotes.invalid = 0
    run = Run()
    # the same sequence in every mode: which worker (a load balancer's pick) and which shape of the mix
    rng = random.Random(args.seed)
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for index in range(args.requests):
        queue.put_nowait((index, rng.randrange(len(workers)), rng.randrange(len(MIX))))

    started = time.perf_counter()

    async def client() -> None:
        while not queue.empty():
            index, worker, shape = queue.get_nowait()
            if args.rate > 0:  # an arrival schedule, so that a run spans several TTLs
                await asyncio.sleep(max(0.0, started + index / args.rate - time.perf_counter()))
            await one_request(workers[worker], index, shape, args.provision_every, run)

    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    quote_calls = sum(w.engine.calls["quote"] - before.get("quote", 0) for w, before in zip(workers, calls_before,
                                                                                            strict=True))
    all_calls = sum(sum(w.engine.calls.values()) - sum(before.values()) for w, before in zip(workers, calls_before,
                                                                                             strict=True))
    hits = sum(w.quotes.hits + w.quotes.near_hits for w in workers if w.quotes is not None)
    shared_hits = sum(w.quotes.hits for w in workers if w.quotes is not None)  # from Ignite (not held by the worker)
    misses = sum(w.quotes.misses for w in workers if w.quotes is not None)
    invalid = sum(w.quotes.invalid for w in workers if w.quotes is not None)
    for worker in workers:
        await worker.runtime.close()
        if worker.cache is not None:
            await worker.cache.close()
    quotes, provisions = sorted(run.quote_ms), sorted(run.provision_ms)
    return {
        "cache": mode,
        "requests": args.requests,
        "quotes": len(quotes),
        "provisions": len(provisions),
        "provision_outcomes": run.outcomes,
        "engine_quote_calls": quote_calls,
        "engine_calls": all_calls,
        "cache_hits": hits,
        "cache_hits_from_ignite": shared_hits,
        "cache_misses": misses,
        "cache_invalid": invalid,
        "hit_rate": hits / (hits + misses) if hits + misses else None,
        "quote_p50_ms": percentile(quotes, 0.5) if quotes else None,
        "quote_p99_ms": percentile(quotes, 0.99) if quotes else None,
        "provision_p50_ms": percentile(provisions, 0.5) if provisions else None,
        "provision_p99_ms": percentile(provisions, 0.99) if provisions else None,
        "elapsed_s": elapsed,
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [("cache", "engine quote calls", "engine calls", "hit rate", "quote p50 ms", "quote p99 ms",
             "provision p50 ms", "provision p99 ms", "elapsed s")]
    for r in results:
        rows.append((
            r["cache"], str(r["engine_quote_calls"]), str(r["engine_calls"]),
            f"{r['hit_rate']:.1%}" if r["hit_rate"] is not None else "-",
            f"{r['quote_p50_ms']:.2f}", f"{r['quote_p99_ms']:.2f}",
            f"{r['provision_p50_ms']:.2f}" if r["provision_p50_ms"] is not None else "-",
            f"{r['provision_p99_ms']:.2f}" if r["provision_p99_ms"] is not None else "-",
            f"{r['elapsed_s']:.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    cache_name = f"service_bench_{uuid.uuid4().hex[:12]}"
    results = []
    async with standin_process(args.capacity) as url:
        for mode in MODES:
            results.append(await measure(url, mode, args, cache_name))
    settings = Settings()
    cleanup = IgniteSharedCache(settings.ignite_host, settings.ignite_port, cache_name, label="bench")
    await cleanup.destroy()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--provision-every", type=int, default=4, help="every n-th request is a provision (0: none)")
    parser.add_argument("--ttl", type=float, default=15.0, help="SHARED_CACHE_QUOTE_TTL_SECONDS")
    parser.add_argument("--capacity", type=int, default=10_000, help="the stand-in's instances per pool")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (0: as fast as they go)")
    parser.add_argument("--seed", type=int, default=7, help="of the request sequence (the same in every mode)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({"machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                          "settings": vars(args), "results": results}, indent=2))
    else:
        rate = f"{args.rate:g}/s" if args.rate > 0 else "unpaced"
        print(f"{args.requests} requests (every {args.provision_every}th a provision), {rate}, {args.workers} workers, "
              f"concurrency {args.concurrency}, TTL {args.ttl:g} s, {os.cpu_count()} CPUs")
        print(table(results))


if __name__ == "__main__":
    main()
