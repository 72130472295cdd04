"""Decision latency of the compute optimizer over the real catalogs (Lambda, Nebius, Verda: 532 offers).

1,000 random feasible requests (seeded): GPU and CPU requests, allow/deny lists, spot, price caps, tenant
discounts, quota and budget, failure history. Prints JSON: p50/p99/max decision latency in ms.
Run from the repository root: ``.venv/bin/python -m bench.compute_choice [--requests 1000] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from pipeline.compute.catalog import Offer, OfferBook, load_catalogs, real_catalog_paths
from pipeline.compute.optimizer import TenantPolicy, TenantUsage, choose, index_for
from pipeline.compute.request import ComputeRequest

CATALOG_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "catalog"


def random_case(rng: random.Random, offers: list[Offer]) -> tuple[ComputeRequest, TenantPolicy, TenantUsage]:
    target = rng.choice(offers)
    providers = sorted({o.provider for o in offers})
    regions = sorted({o.region for o in offers})
    discounts = {p: rng.choice([0.0, 0.05, 0.1, 0.2]) for p in providers}
    price = target.price_per_hour * (1 - discounts[target.provider])
    hours = rng.choice([1.0, 6.0, 24.0, 72.0])
    resources: dict[str, object] = {"memory_gib": rng.uniform(0, target.memory_gib)}
    if target.gpu_name:
        resources["gpu"] = {"type": target.gpu_name, "count": rng.randint(1, target.gpu_count)}
        resources["vcpus"] = rng.uniform(0, target.vcpus)
    else:
        resources["vcpus"] = rng.uniform(1, max(target.vcpus, 1))
    body: dict[str, object] = {
        "tenant_id": "bench",
        "resources": resources,
        "duration_hours": hours,
        "spot_allowed": target.capacity_class == "spot" or rng.random() < 0.5,
        "max_price_per_hour": rng.choice([None, price * rng.uniform(1, 2)]),
    }
    if rng.random() < 0.3:
        body["regions"] = sorted({target.region, *rng.sample(regions, 3)})
    if rng.random() < 0.3:
        body["exclude_providers"] = [p for p in rng.sample(providers, 1) if p != target.provider]
    policy = TenantPolicy(
        tenant_id="bench", max_gpus=target.gpu_count + 16, budget_usd=price * hours * 2 + 100, discounts=discounts
    )
    return ComputeRequest.model_validate(body), policy, TenantUsage(gpus_in_use=8, spent_usd=50)


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    n = len(ordered)
    return {
        "p50": round(ordered[n // 2], 3),
        "p90": round(ordered[int(n * 0.9)], 3),
        "p99": round(ordered[min(n - 1, int(n * 0.99))], 3),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--catalog-dir", type=Path, default=CATALOG_DIR)
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the same requests")
    args = parser.parse_args()
    offers = load_catalogs(real_catalog_paths(args.catalog_dir))
    book = OfferBook(offers)
    t0 = time.perf_counter()
    index_for(book)
    index_ms = (time.perf_counter() - t0) * 1000
    rng = random.Random(args.seed)
    failures = {o.offer_id: rng.randint(1, 3) for o in rng.sample(offers, 50)}
    cases = [random_case(rng, offers) for _ in range(args.requests)]
    for request, policy, usage in cases[:50]:  # warm-up (caches of the index's bulk exclusion lists)
        choose(request, book, policy=policy, usage=usage, failures=failures)
    passes = []
    feasible = 0
    for _ in range(args.passes):
        gc.collect()
        latencies = []
        feasible = 0
        for request, policy, usage in cases:
            start = time.perf_counter_ns()
            decision = choose(request, book, policy=policy, usage=usage, failures=failures)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
            feasible += decision.feasible
        passes.append(summary(latencies))
    json.dump(
        {
            "bench": "compute_choice",
            "offers": len(offers),
            "requests": len(cases),
            "feasible": feasible,
            "index_build_ms": round(index_ms, 3),
            "decision_ms_per_pass": passes,
            "worst_pass_p99_ms": max(p["p99"] for p in passes),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        sys.stdout,
        indent=2,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
