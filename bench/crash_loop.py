"""The crash and fault loop, long version (issue #11). Prints a JSON summary.

A steady stream of mixed events through Pulsar (tenant-created with a backlog a fresh consumer group works
through, tenant-deleted with and without purge, user-created, resource-metrics, compute-request-events on
the derivatives stand-in and the kube-apiserver) into a worker with the executor on against the local
stack's real backends, while the worker is SIGKILLed ``--kills`` times at random moments (the first during
the backlog, some right after a compute request), backends are stopped for a while and restarted
(``--outages``, through the devstack; restarted even when the run fails), and a second worker joins and is
killed. Then everything is compared with the ground truth computed from the events sent
(``devstack/harness/fault_loop.py``). Needs no input data; every tenant it created is purged at the end.

    .venv/bin/python -m bench.crash_loop [--kills 24] [--tenants 60] [--rate 3] [--outages derivatives cassandra]

Exit status 1 when something was lost, duplicated, leaked or did not converge.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from devstack import stack
from devstack.harness.fault_loop import CrashAndFaultLoop, LoopPlan, backend_clients, loop_env
from devstack.harness.tenant_provisioning import BACKEND_SERVICES, EventPlane
from devstack.harness.worker import WorkerProcess, free_port
from pipeline.config import get_settings
from web.auth import issue_dev_token

SECRET = "bench-crash-loop-secret-of-32-bytes-or-more"  # noqa: S105 - a local bench worker's JWT secret


def progress(message: str) -> None:
    sys.stderr.write(f"[crash-loop {time.strftime('%H:%M:%S')}] {message}\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = stack.context(get_settings())
    services = ["etcd", *BACKEND_SERVICES, "derivatives"]
    stack.up(ctx, services)
    backends_env = stack.exports(ctx, services)
    workdir = Path(tempfile.mkdtemp(prefix="bench-crash-loop-"))
    plane = EventPlane.start(ctx.cache_dir, workdir / "plane", stack.load("pulsar").exports(ctx))
    workers: list[WorkerProcess] = []

    def start_worker(env: dict[str, str], port: int | None = None) -> WorkerProcess:
        port = port or free_port()
        worker = WorkerProcess(env, port, workdir / f"data-{port}", workdir / f"worker-{port}.log")
        workers.append(worker.start())
        return worker

    plan = LoopPlan(backlog=args.backlog, tenants=args.tenants, deletes=args.deletes, users=args.users,
                    metrics=args.metrics, compute=args.compute, kills=args.kills, rate=args.rate,
                    kill_delay=(args.kill_delay_min, args.kill_delay_max), outages=tuple(args.outages),
                    outage_seconds=args.outage_seconds, two_workers=not args.one_worker,
                    converge_timeout=args.converge_timeout, seed=args.seed)
    token = issue_dev_token(SECRET, "bench", ["platform-admin"], None, timedelta(hours=6))
    started = time.monotonic()
    try:
        with backend_clients(backends_env) as backends:
            loop = CrashAndFaultLoop(plan, plane, loop_env(backends_env, {}, plane, SECRET), backends, ctx,
                                     start_worker, token, progress)
            report = loop.run()
    finally:
        for worker in workers:
            worker.stop()
        plane.stop()
    return {
        "benchmark": "crash_loop",
        "command": "python -m bench.crash_loop " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "plan": {**{k: v for k, v in vars(plan).items() if k != "kill_delay"}, "kill_delay": list(plan.kill_delay)},
        "wall_seconds": round(time.monotonic() - started, 1),
        "ok": report.ok,
        **report.summary(),
        "restart_to_ready_seconds": report.restart_to_ready_seconds,
        "resources_refused": report.refused[:20],
        "details": report.details(),
        "cleanup_errors": report.cleanup_errors,
        "logs": str(workdir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs of the first worker (the second's is extra)")
    parser.add_argument("--backlog", type=int, default=20, help="tenant-created events preloaded into Kafka")
    parser.add_argument("--tenants", type=int, default=45, help="tenant-created events through Pulsar")
    parser.add_argument("--deletes", type=int, default=8, help="tenant-deleted events (purge every other one)")
    parser.add_argument("--users", type=int, default=30, help="user-created events")
    parser.add_argument("--metrics", type=int, default=120, help="resource-metrics samples")
    parser.add_argument("--compute", type=int, default=24, help="compute requests (GPU on the stand-in, CPU on "
                                                                  "Kubernetes, in turn)")
    parser.add_argument("--rate", type=float, default=1.0, help="events per second through Pulsar")
    parser.add_argument("--kill-delay-min", type=float, default=6.0, help="seconds between kills, at least")
    parser.add_argument("--kill-delay-max", type=float, default=20.0, help="seconds between kills, at most")
    parser.add_argument("--outages", nargs="*", default=["derivatives"],
                        choices=["derivatives", "cassandra", "kubernetes"],
                        help="backends stopped for a while, one after the other")
    parser.add_argument("--outage-seconds", type=float, default=20.0, help="how long each outage lasts")
    parser.add_argument("--one-worker", action="store_true", help="skip the phase with a second worker")
    parser.add_argument("--converge-timeout", type=float, default=900.0, help="upper bound of the final wait")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    result = run(args)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
