"""Per-sample cost of the scaling engine's hot path, on the NYC taxi series.

Measures, over the whole 17,520-point series (``--repeats`` times, fresh model each time):

* ``learn+forecast``: ``OnlineForecaster.learn_one`` + ``forecast`` (5 steps, band levels 0.1/0.9),
  the figure behind the "< 50 us per sample" target;
* ``learn`` only, and ``decide`` (predictive + reactive policies) per event, so the agent owner can
  estimate events per second with forecasting on (learn + forecast + decide) and off (decide only).

Wall time (time.perf_counter) and process CPU time (time.process_time) are both reported; on a
shared machine the wall figure includes time spent waiting for a core. Prints JSON.

    .venv/bin/python -m bench.scaling_forecast_speed [--repeats 3]

Reads the series from ``../shared/data`` beside the clone (not shipped with the repository).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from river.__version__ import __version__ as river_version

from pipeline.scaling.decide import decide
from pipeline.scaling.decision_models import DecisionInputs
from pipeline.scaling.forecast import ForecasterConfig, OnlineForecaster
from pipeline.scaling.policies import Policy, PredictivePolicy, TargetTrackingPolicy

ROOT = Path(__file__).resolve().parents[1]

TAXI = ROOT.parent / "shared" / "data" / "htm_nyc_taxi_benchmark" / "data" / "nyc_taxi.csv"


def load() -> list[float]:
    with TAXI.open(newline="") as fh:
        rows = list(csv.reader(fh))[3:]
    return [float(r[1]) for r in rows]


def timed(fn: Any) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall0, time.process_time() - cpu0


def stats(samples: list[tuple[float, float]], n: int) -> dict[str, float]:
    walls = [w / n * 1e6 for w, _ in samples]
    cpus = [c / n * 1e6 for _, c in samples]
    return {
        "us_wall_min": round(min(walls), 2),
        "us_wall_median": round(statistics.median(walls), 2),
        "us_cpu_min": round(min(cpus), 2),
        "us_cpu_median": round(statistics.median(cpus), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    values = load()
    n = len(values)
    config = ForecasterConfig(interval_minutes=30, horizon=5)
    levels = (0.1, 0.9)

    def learn_and_forecast() -> None:
        model = OnlineForecaster(config)
        for v in values:
            model.learn_one(v)
            model.forecast(levels)

    def learn_only() -> None:
        model = OnlineForecaster(config)
        for v in values:
            model.learn_one(v)

    results: dict[str, Any] = {
        "series": "nyc_taxi (17,520 points, horizon 5)",
        "river": river_version,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "repeats": args.repeats,
    }
    results["learn_and_forecast"] = stats([timed(learn_and_forecast) for _ in range(args.repeats)], n)
    results["learn_only"] = stats([timed(learn_only) for _ in range(args.repeats)], n)

    # decide() per event, with the forecasts of one pass.
    model = OnlineForecaster(config)
    forecasts = []
    for v in values[:4000]:
        model.learn_one(v)
        forecasts.append(model.forecast(levels))
    policies: list[Policy] = [
        TargetTrackingPolicy(
            policy_id="reactive", tenant_id="t", workload="w", target_utilization=0.8, max_replicas=1000
        ),
        PredictivePolicy(policy_id="predictive", tenant_id="t", workload="w", lead_steps=2, max_replicas=1000),
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def decide_loop() -> None:
        state = None
        replicas = 10
        for i, fc in enumerate(forecasts):
            inputs = DecisionInputs(
                tenant_id="t",
                workload="w",
                now=start + timedelta(minutes=30 * i),
                current_replicas=replicas,
                demand_window=values[max(0, i - 2) : i + 1],
                capacity_per_replica=1500.0,
                forecast=fc,
            )
            decision, state = decide(inputs, policies, state)
            replicas = decision.desired_replicas

    results["decide"] = stats([timed(decide_loop) for _ in range(args.repeats)], len(forecasts))
    on = results["learn_and_forecast"]["us_cpu_min"] + results["decide"]["us_cpu_min"]
    off = results["decide"]["us_cpu_min"]
    results["events_per_cpu_second"] = {
        "forecasting_on": round(1e6 / on),
        "forecasting_off": round(1e6 / off),
        "note": "pure logic on one core (min CPU time); broker and table I/O of the agent not included",
    }
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
