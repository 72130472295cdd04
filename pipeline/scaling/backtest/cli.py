"""``python -m pipeline backtest``: arguments, validation and output (a summary, or JSON with ``--json``; and with
``--plot PATH`` an HTML page with the charts)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.scaling.backtest.errors import BacktestError
from pipeline.scaling.backtest.options import BacktestOptions
from pipeline.scaling.backtest.plot import Traces, write_plot
from pipeline.scaling.backtest.report import summary
from pipeline.scaling.backtest.run import run_backtest


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _ArgumentError(message)


def add_backtest_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the backtest options to ``parser`` (a sub-command parser of ``python -m pipeline``)."""
    parser.add_argument("--csv", required=True, type=Path, help="CSV file with a header row")
    parser.add_argument("--time-column", required=True, help="name of the timestamp column")
    parser.add_argument("--value-column", required=True, help="name of the numeric demand column")
    parser.add_argument("--interval-minutes", required=True, type=float, help="sampling interval")
    parser.add_argument(
        "--capacity-per-replica",
        type=float,
        default=None,
        help="demand one replica serves at 100%% utilization (default: mean of the series / 10)",
    )
    parser.add_argument("--boot-steps", type=int, default=2, help="steps before a new replica is ready")
    parser.add_argument("--policy", type=Path, default=None, help="policy document(s), JSON or YAML")
    parser.add_argument("--horizon", type=int, default=5, help="forecast step scored (default 5)")
    parser.add_argument(
        "--score-from",
        type=int,
        default=None,
        help="first scored step index (default: one week of steps, at most half the series)",
    )
    parser.add_argument("--reactive-target", type=float, default=0.7, help="reactive target utilization")
    parser.add_argument("--predictive-target", type=float, default=1.0, help="predictive target utilization")
    parser.add_argument("--predictive-quantile", type=float, default=0.9, help="forecast quantile provisioned")
    parser.add_argument(
        "--predictive-scale-in-stabilization",
        type=int,
        default=0,
        metavar="SECONDS",
        help="predictive scale-in stabilization window (default 0)",
    )
    parser.add_argument(
        "--hybrid-reactive-target",
        type=float,
        default=0.8,
        help="reactive target of the predictive_plus_reactive run (default 0.8; 0 skips that run)",
    )
    parser.add_argument("--no-equal-cost", action="store_true", help="skip the equal-cost comparison")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON (for scripts)")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the series, the forecast band and each policy's replicas to PATH (one self-contained HTML "
        "file, nothing fetched from the network)",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> BacktestOptions:
    return BacktestOptions(
        csv=args.csv,
        time_column=args.time_column,
        value_column=args.value_column,
        interval_minutes=args.interval_minutes,
        capacity_per_replica=args.capacity_per_replica,
        boot_steps=args.boot_steps,
        policy_file=args.policy,
        horizon=args.horizon,
        score_from=args.score_from,
        reactive_target=args.reactive_target,
        predictive_target=args.predictive_target,
        predictive_quantile=args.predictive_quantile,
        predictive_scale_in_stabilization_seconds=args.predictive_scale_in_stabilization,
        equal_cost=not args.no_equal_cost,
        hybrid_reactive_target=args.hybrid_reactive_target or None,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for an already parsed namespace (``python -m pipeline backtest``)."""
    try:
        options = options_from_args(args)
        for name, value in (
            ("--reactive-target", options.reactive_target),
            ("--predictive-target", options.predictive_target),
        ):
            if not 0 < value <= 2:
                raise BacktestError(f"{name} must be in (0, 2]")
        if not 0 < options.predictive_quantile < 1:
            raise BacktestError("--predictive-quantile must be in (0, 1)")
        plot: Path | None = getattr(args, "plot", None)
        if plot is not None and not plot.parent.is_dir():
            # Refused before the run: the backtest can take minutes on a long series.
            raise BacktestError(f"--plot {plot}: the directory {plot.parent} does not exist")
        traces = Traces() if plot is not None else None
        result = run_backtest(options, traces)
        text = summary(result)
        if plot is not None and traces is not None:
            write_plot(plot, result, traces, text)
    except BacktestError as exc:
        sys.stderr.write(f"backtest: error: {exc}\n")
        return 2
    if getattr(args, "json", False):
        json.dump(result, sys.stdout, indent=2)
    else:
        sys.stdout.write(text)
    sys.stdout.write("\n")
    if plot is not None:
        sys.stderr.write(f"backtest: plot written to {plot}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.scaling.backtest ...``; returns the exit status (never raises SystemExit
    for bad arguments: the message goes to stderr and the status is 2)."""
    parser = add_backtest_arguments(_Parser(prog="backtest", description=__doc__.split("\n\n")[0]))
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        sys.stderr.write(f"{parser.format_usage()}backtest: error: {exc}\n")
        return 2
    return run_from_args(args)

