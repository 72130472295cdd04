"""Scale-out on one machine (issue #15): three workers, one SIGKILLed under load and restarted, with 0 and with
1 table standby replica. Prints a JSON summary and a table.

    .venv/bin/python -m bench.scale_out [--tenants 150] [--rate 15] [--standbys 0 1]

What each figure means: ``devstack/harness/scale_out.py``. Exit status 1 when a tenant was lost or read
differently from two workers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from devstack import stack
from devstack.harness.scale_out import run_scale_out
from devstack.harness.tenant_provisioning import EventPlane
from pipeline.config import get_settings
from web.auth import issue_dev_token

SECRET = "bench-scale-out-secret-of-32-bytes-or-more"  # noqa: S105 - a local bench worker's JWT secret


def progress(message: str) -> None:
    sys.stderr.write(f"[scale-out {time.strftime('%H:%M:%S')}] {message}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=150)
    parser.add_argument("--rate", type=float, default=15.0, help="tenant-created events per second")
    parser.add_argument("--standbys", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--session-timeouts", type=float, nargs="+", default=[60.0, 10.0],
                        help="KAFKA_SESSION_TIMEOUT_SECONDS of the workers, one run per value and standby count")
    args = parser.parse_args()
    ctx = stack.context(get_settings())
    stack.up(ctx, ["pulsar"])
    token = issue_dev_token(SECRET, "bench", ["platform-admin"], None, timedelta(hours=2))
    runs: list[dict[str, Any]] = []
    for session_timeout in args.session_timeouts:
        for standby in args.standbys:
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-scale-out-{standby}-"))
            plane = EventPlane.start(ctx.cache_dir, workdir / "plane", stack.load("pulsar").exports(ctx))
            try:
                report = run_scale_out(plane, workdir, SECRET, token, tenants=args.tenants, rate=args.rate,
                                       standby_replicas=standby, session_timeout=session_timeout, log=progress)
            finally:
                plane.stop()
            runs.append({**asdict(report), "error_rate": round(report.error_rate, 4)})
    summary = {
        "benchmark": "scale_out",
        "command": "python -m bench.scale_out " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "runs": runs,
    }
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n\nsession s  standbys  take-over s  failed reads (of)  restart ready s  "
                     "restart serving s  lost\n")
    for r in runs:
        sys.stdout.write(f"{r['session_timeout_seconds']:>9.0f}  {r['standby_replicas']:>8}  "
                         f"{r['seconds_to_serve_after_kill'] or float('nan'):>11.1f}  "
                         f"{r['failed_reads_during_takeover']:>6} ({r['reads_during_takeover']:>5})     "
                         f"{r['seconds_to_restart_ready'] or float('nan'):>15.1f}  "
                         f"{r['seconds_to_restart_serving'] or float('nan'):>17.1f}  {len(r['tenants_missing'])}\n")
    return 1 if any(r["tenants_missing"] or r["inconsistent"] for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
