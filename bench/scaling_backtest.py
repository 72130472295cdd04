"""Backtest of the scaling engine on the NYC taxi series and the NAB AWS CloudWatch CPU series.

Runs ``pipeline.scaling.backtest`` (the same code as ``python -m pipeline backtest``) on each series
and prints one JSON document: per series the command line that reproduces it, the forecast metrics
and the equal-cost comparison, then a summary table. Extra arguments are passed to every backtest
(e.g. ``--boot-steps 3``). ``--only SUBSTRING`` restricts the series.

    .venv/bin/python -m bench.scaling_backtest [--only taxi] [backtest options...]

The series are read from ``../shared/data`` beside the clone (not shipped with the repository: the taxi
series is AGPL-3.0 in its source); the unit tests use a synthetic series instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.scaling.backtest import (
    BacktestError,
    add_backtest_arguments,
    options_from_args,
    run_backtest,
)

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data"
TAXI = DATA / "htm_nyc_taxi_benchmark" / "data" / "nyc_taxi.csv"
NAB = DATA / "nab" / "data" / "realAWSCloudwatch"


def series_args() -> list[tuple[str, list[str]]]:
    out = [
        (
            "nyc_taxi",
            [
                "--csv",
                str(TAXI),
                "--time-column",
                "timestamp",
                "--value-column",
                "passenger_count",
                "--interval-minutes",
                "30",
                "--horizon",
                "5",
                "--score-from",
                "10000",
            ],
        )
    ]
    for path in sorted(NAB.glob("*_cpu_utilization_*.csv")):
        out.append(
            (
                path.stem,
                [
                    "--csv",
                    str(path),
                    "--time-column",
                    "timestamp",
                    "--value-column",
                    "value",
                    "--interval-minutes",
                    "5",
                    "--horizon",
                    "5",
                ],
            )
        )
    return out


def _display(args: list[str]) -> str:
    shown = [a.replace(str(ROOT.parent), "..") for a in args]
    return ".venv/bin/python -m pipeline backtest " + " ".join(shlex.quote(a) for a in shown)


def main() -> int:
    outer = argparse.ArgumentParser(add_help=False)
    outer.add_argument("--only", default=None)
    known, extra = outer.parse_known_args()
    results: dict[str, Any] = {}
    summary: list[dict[str, Any]] = []
    for name, args in series_args():
        if known.only and known.only not in name:
            continue
        parser = add_backtest_arguments(argparse.ArgumentParser())
        ns = parser.parse_args(args + extra)
        started = time.perf_counter()
        try:
            result = run_backtest(options_from_args(ns))
        except BacktestError as exc:
            results[name] = {"error": str(exc)}
            continue
        result["command"] = _display(args + extra)
        result["bench_seconds"] = round(time.perf_counter() - started, 1)
        results[name] = result
        fc = result["forecast"]
        eq = result["equal_cost"]
        row = {
            "series": name,
            "wmape": fc["wmape"],
            "nrmse": fc["nrmse"],
            "us_wall": fc["us_per_sample_wall"],
            "us_cpu": fc["us_per_sample_cpu"],
            "under_predictive": eq["under_provisioned_fraction"]["predictive"],
            "under_reactive_equal_cost": eq["under_provisioned_fraction"]["reactive"],
            "reduction": eq["under_provisioned_reduction"],
            "not_worse": eq["not_worse_than_reactive"],
            "matched": eq["matched_within_2_percent"],
        }
        hybrid = result.get("equal_cost_predictive_plus_reactive")
        if hybrid is not None:
            row["under_hybrid"] = hybrid["under_provisioned_fraction"]["predictive_plus_reactive"]
            row["under_reactive_equal_cost_hybrid"] = hybrid["under_provisioned_fraction"]["reactive"]
            row["reduction_hybrid"] = hybrid["under_provisioned_reduction"]
            row["not_worse_hybrid"] = hybrid["not_worse_than_reactive"]
            row["matched_hybrid"] = hybrid["matched_within_2_percent"]
        summary.append(row)
    json.dump({"series": results, "summary": summary}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
