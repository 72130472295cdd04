"""Failover against the STAND-IN derivatives engine (in-process, 127.0.0.1 ephemeral port).

For k = 0..3 the stand-in fails the first k candidates (kind: ``refused``, ``timeout`` — the engine makes
the allocation and hangs, the client gives up after ``--allocate-timeout`` — or ``provision_fail``); we
measure the time to a running allocation and the number of attempts, and verify that exactly one
allocation is held while running and none after it is released (no leak from abandoned attempts).
Prints JSON. Run from the repository root: ``.venv/bin/python -m bench.compute_failover``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from devstack.derivatives_standin import FaultKind, running_standin
from pipeline.compute.access import AccessSecrets
from pipeline.compute.allocation import FailoverPolicy, allocate_with_failover
from pipeline.compute.catalog import OfferBook, load_catalogs, real_catalog_paths
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.optimizer import choose
from pipeline.compute.request import ComputeRequest

CATALOG_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "catalog"
REQUEST = ComputeRequest.model_validate(
    {"tenant_id": "bench", "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6}
)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    offers = load_catalogs(real_catalog_paths(args.catalog_dir))
    book = OfferBook(offers)
    decision = choose(REQUEST, book).raise_if_infeasible()
    candidates = [o for o in (book.get(c.offer_id) for c in decision.candidates) if o is not None]
    policy = FailoverPolicy(max_attempts=5, deadline_s=60, poll_interval_s=args.poll_interval)
    setup = AccessSecrets.generate("bench").setup()
    results: list[dict[str, Any]] = []
    leaks = 0
    async with running_standin(offers, default_capacity=4, provisioning_s=args.provisioning_s) as standin:
        async with DerivativesEngineClient(standin.url, allocate_timeout_s=args.allocate_timeout) as engine:
            kinds: list[FaultKind] = ["refused", "timeout", "provision_fail"]
            for kind in kinds:
                for k in range(4):
                    times, attempts = [], []
                    for _ in range(args.trials):
                        standin.engine.fail_next(k, kind, hang_s=30)
                        start = time.perf_counter()
                        result = await allocate_with_failover(REQUEST, candidates, engine, setup, policy=policy)
                        elapsed = time.perf_counter() - start
                        assert result.ok and result.allocation is not None, result.error
                        held = standin.engine.active_allocations()
                        leaks += len(held) - 1
                        await engine.release(result.allocation.allocation_id)
                        leaks += len(standin.engine.active_allocations())
                        times.append(elapsed * 1000)
                        attempts.append(len(result.attempts))
                    results.append(
                        {
                            "fault": kind,
                            "k": k,
                            "trials": args.trials,
                            "attempts": statistics.mode(attempts),
                            "time_to_running_ms_p50": round(statistics.median(times), 2),
                            "time_to_running_ms_max": round(max(times), 2),
                        }
                    )
            final_active = len(standin.engine.active_allocations())
    return {
        "bench": "compute_failover",
        "standin": True,
        "allocate_timeout_s": args.allocate_timeout,
        "provisioning_s": args.provisioning_s,
        "poll_interval_s": args.poll_interval,
        "results": results,
        "leaked_allocations": leaks,
        "active_after_all_runs": final_active,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--allocate-timeout", type=float, default=0.5)
    parser.add_argument("--provisioning-s", type=float, default=0.0)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--catalog-dir", type=Path, default=CATALOG_DIR)
    args = parser.parse_args()
    json.dump(asyncio.run(run(args)), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
