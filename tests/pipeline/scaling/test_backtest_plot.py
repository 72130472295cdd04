"""``python -m pipeline backtest --plot PATH``: one self-contained HTML file with the series, the band and each
policy's replicas."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.__main__ import main as pipeline_main
from pipeline.scaling.backtest import main
from pipeline.scaling.backtest.plot import MAX_POINTS, Traces, render_html
from tests.pipeline.scaling.test_backtest import nab_like

ARGS = ["--time-column", "timestamp", "--value-column", "value", "--interval-minutes", "60", "--horizon", "3"]


def series_in(page: str, name: str) -> list[str]:
    """The ``points`` of every polyline / polygon drawn for the series ``name``."""
    return re.findall(rf'data-series="{re.escape(name)}"[^>]* points="([^"]+)"', page)


def test_the_plot_is_written_self_contained_with_every_policys_replicas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "backtest.html"
    code = main(["--csv", str(nab_like(tmp_path / "series.csv")), *ARGS, "--json", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)  # --json still prints the JSON document alone on stdout
    assert f"plot written to {plot}" in err
    page = plot.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # Nothing to fetch: no URL at all, no script, stylesheet or image loaded from elsewhere.
    assert not re.search(r"https?:|//[a-z]", page, re.IGNORECASE)
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|@import|url\(", page, re.IGNORECASE)
    assert set(result["policies"]) >= {"reactive", "predictive", "predictive_plus_reactive", "oracle"}
    steps = result["series"]["steps"]
    for name in [*result["policies"], "demand", "needed by the demand"]:
        [points] = series_in(page, name)  # one unbroken line: the series has no gap
        xs = [float(p.split(",")[0]) for p in points.split()]
        assert len(xs) >= steps and xs == sorted(xs)  # every step, left to right (steps add corners)
    assert series_in(page, "forecast band")
    assert "<pre>" in page and "replica-hours" in page.lower()  # the summary table under the charts


def test_a_plot_into_a_missing_directory_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "nowhere" / "backtest.html"
    code = main(["--csv", str(nab_like(tmp_path / "series.csv")), *ARGS, "--plot", str(plot)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "--plot" in err and "does not exist" in err
    assert not plot.parent.exists()


def test_help_with_a_plot_path_prints_usage_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "backtest.html"
    csv_path = nab_like(tmp_path / "series.csv")
    assert pipeline_main(["backtest", "--csv", str(csv_path), *ARGS, "--plot", str(plot), "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out.lower() and "--plot" in out
    assert not plot.exists()


def traces(n: int, gap: int | None = None) -> Traces:
    demand: list[float | None] = [float(10 + i % 7) for i in range(n)]
    if gap is not None:
        demand[gap] = None
    return Traces(
        start=datetime(2026, 1, 5, tzinfo=UTC), interval_minutes=60, capacity_per_replica=2.0, horizon=1,
        score_from=n // 2, demand=demand, band_low=[None, *[8.0] * (n - 1)], band_high=[None, *[20.0] * (n - 1)],
        replicas={"reactive": [6] * n, "oracle": [8] * n},
    )


def result_for(n: int) -> dict[str, object]:
    return {"series": {"csv": "s.csv", "start": "2026-01-05", "end": "2026-02-05"}, "settings": {"boot_steps": 2}}


def test_a_missing_step_is_a_gap_in_the_line_not_a_made_up_value() -> None:
    page = render_html(result_for(50), traces(50, gap=20), "summary")
    assert len(series_in(page, "demand")) == 2
    assert len(series_in(page, "forecast band")) == 1
    [reactive] = series_in(page, "reactive")  # a policy always has a count
    assert len(reactive.split()) == 50


def test_a_long_series_is_drawn_in_buckets() -> None:
    n = 4 * MAX_POINTS + 3
    page = render_html(result_for(n), traces(n), "summary")
    [demand] = series_in(page, "demand")
    assert len(demand.split()) <= MAX_POINTS
    assert f"envelope of 5 steps ({n} steps in all)" in page
    [oracle] = series_in(page, "oracle")
    assert len(oracle.split()) <= MAX_POINTS
