"""``--plot PATH``: the backtest as one self-contained HTML page for people.

Two charts drawn as inline SVG generated here (no script, no stylesheet or font to fetch, nothing on the
network: the file opens anywhere, offline): the series with the forecast band (the ``--horizon``-step
forecast made at each step, drawn at the step it forecasts) and each policy's replicas over time next to the
replicas the demand needed. The summary table of the terminal output is printed below them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.scaling.backtest.errors import BacktestError

#: Points per line at most; longer series are drawn in buckets (the envelope of each bucket).
MAX_POINTS = 1500
WIDTH, HEIGHT = 1000, 260
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 14, 30
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
DEMAND_COLOR = "#333333"
BAND_COLOR = "#9ecae1"


@dataclass
class Traces:
    """The per-step series the plot draws (filled by :func:`~pipeline.scaling.backtest.run.run_backtest`)."""

    start: datetime | None = None
    interval_minutes: float = 1.0
    capacity_per_replica: float = 1.0
    horizon: int = 1
    score_from: int = 0
    demand: list[float | None] = field(default_factory=list)
    """The series as loaded (None: a missing step)."""
    band: tuple[float, float] = (0.1, 0.9)
    band_low: list[float | None] = field(default_factory=list)
    band_high: list[float | None] = field(default_factory=list)
    """The forecast band for each step, forecast ``horizon`` steps before it (None: no forecast for it)."""
    replicas: dict[str, list[int]] = field(default_factory=dict)
    """Replicas requested at each step, per policy (the oracle included)."""


def _buckets(n: int) -> int:
    return max(1, math.ceil(n / MAX_POINTS))


def _reduce(values: Sequence[float | None], size: int, pick: Callable[[list[float]], float]) -> list[float | None]:
    """One value per bucket of ``size`` steps (None when the whole bucket is missing)."""
    out: list[float | None] = []
    for i in range(0, len(values), size):
        present = [v for v in values[i : i + size] if v is not None and math.isfinite(v)]
        out.append(pick(present) if present else None)
    return out


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks if span > 0 else 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


class _Panel:
    """One chart: maps step index and value to SVG coordinates and collects its elements."""

    def __init__(self, points: int, top_value: float, title: str) -> None:
        self.points = max(points, 2)
        self.step = _nice_step(top_value)
        self.top = max(self.step, math.ceil(top_value / self.step) * self.step)
        self.title = title
        self.parts: list[str] = []

    def x(self, i: int) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * i / (self.points - 1)

    def y(self, value: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / self.top)

    def line(self, values: Sequence[float | None], color: str, name: str, *, dashed: bool = False,
             steps: bool = False) -> None:
        """A polyline per run of present values (a gap in the data is a gap in the line)."""
        runs: list[list[str]] = [[]]
        previous: float | None = None
        for i, v in enumerate(values):
            if v is None:
                if runs[-1]:
                    runs.append([])
                previous = None
                continue
            if steps and previous is not None and previous != v:
                runs[-1].append(f"{self.x(i):.1f},{self.y(previous):.1f}")
            runs[-1].append(f"{self.x(i):.1f},{self.y(v):.1f}")
            previous = v
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        for run in (r for r in runs if r):
            self.parts.append(
                f'<polyline data-series="{html.escape(name)}" fill="none" stroke="{color}" stroke-width="1.3"'
                f'{dash} points="{" ".join(run)}"/>'
            )

    def area(self, low: Sequence[float | None], high: Sequence[float | None], color: str, name: str) -> None:
        """A filled band per run of steps where both edges are known."""
        run: list[tuple[int, float, float]] = []
        for i, (lo, hi) in enumerate([*zip(low, high, strict=True), (None, None)]):
            if lo is not None and hi is not None:
                run.append((i, lo, hi))
                continue
            if run:
                upper = [f"{self.x(j):.1f},{self.y(h):.1f}" for j, _, h in run]
                lower = [f"{self.x(j):.1f},{self.y(lo_):.1f}" for j, lo_, _ in reversed(run)]
                self.parts.append(
                    f'<polygon data-series="{html.escape(name)}" fill="{color}" fill-opacity="0.55" stroke="none" '
                    f'points="{" ".join(upper + lower)}"/>'
                )
                run = []

    def svg(self, x_labels: Sequence[tuple[int, str]], score_from: int | None) -> str:
        grid: list[str] = []
        value = 0.0
        while value <= self.top + 1e-9:
            y = self.y(value)
            grid.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            grid.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>')
            value += self.step
        for k, (i, label) in enumerate(x_labels):
            anchor = "start" if k == 0 else "end" if k == len(x_labels) - 1 else "middle"  # the ends stay inside
            grid.append(f'<text x="{self.x(i):.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}">'
                        f"{html.escape(label)}</text>")
        if score_from is not None and score_from > 0:
            xs = self.x(score_from)
            grid.append(f'<line x1="{xs:.1f}" x2="{xs:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#888" '
                        f'stroke-dasharray="2 3"/><text x="{xs + 4:.1f}" y="{TOP + 10}">scored from here</text>')
        return (
            f'<figure><figcaption>{html.escape(self.title)}</figcaption>'
            f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{html.escape(self.title)}" font-family="sans-serif" font-size="11" fill="#444">'
            + "".join(grid) + "".join(self.parts) + "</svg></figure>"
        )


def _x_labels(traces: Traces, points: int, size: int) -> list[tuple[int, str]]:
    if traces.start is None or points < 2:
        return []
    labels = []
    for k in range(6):
        i = round(k * (points - 1) / 5)
        at = traces.start + timedelta(minutes=traces.interval_minutes * i * size)
        labels.append((i, at.strftime("%Y-%m-%d %H:%M")))
    return labels


def _legend(entries: Sequence[tuple[str, str, bool]]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="border-top: 2px {"dashed" if dashed else "solid"} {color}"></span>'
        f"{html.escape(name)}</li>"
        for name, color, dashed in entries
    )
    return f'<ul class="legend">{items}</ul>'


def render_html(result: dict[str, Any], traces: Traces, summary_text: str) -> str:
    """The page: both charts, their legends, how to read them and the summary table."""
    n = len(traces.demand)
    size = _buckets(n)
    demand = _reduce(traces.demand, size, max)
    low = _reduce(traces.band_low, size, min)
    high = _reduce(traces.band_high, size, max)
    points = len(demand)
    top = max([v for v in [*demand, *high] if v is not None] or [1.0])
    series_panel = _Panel(points, top, "Demand and the forecast band")
    series_panel.area(low, high, BAND_COLOR, "forecast band")
    series_panel.line(demand, DEMAND_COLOR, "demand")

    cpr = traces.capacity_per_replica
    needed = [None if v is None else math.ceil(v / cpr - 1e-9) for v in traces.demand]
    needed_reduced = _reduce([None if v is None else float(v) for v in needed], size, max)
    policy_lines = {name: _reduce([float(r) for r in reps], size, max) for name, reps in traces.replicas.items()}
    top_replicas = max([v for values in [needed_reduced, *policy_lines.values()] for v in values if v is not None]
                       or [1.0])
    replicas_panel = _Panel(points, top_replicas, "Replicas requested by each policy")
    replicas_panel.line(needed_reduced, DEMAND_COLOR, "needed by the demand", dashed=True, steps=True)
    entries = [("needed by the demand (ceil(demand / capacity per replica))", DEMAND_COLOR, True)]
    for k, (name, values) in enumerate(policy_lines.items()):
        color = COLORS[k % len(COLORS)]
        replicas_panel.line(values, color, name, steps=True)
        entries.append((name, color, False))

    labels = _x_labels(traces, points, size)
    band = f"q{traces.band[0]:g}-q{traces.band[1]:g}"
    bucket_note = (f" Each point is the envelope of {size} steps ({n} steps in all)." if size > 1 else "")
    title = f"Backtest of {result['series']['csv']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1040px; }}
h1 {{ font-size: 1.3em; overflow-wrap: anywhere; }}
figure {{ margin: 1em 0; }} figcaption {{ font-weight: bold; margin-bottom: .3em; }}
.legend {{ list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1.2em; margin: .2em 0 1em; }}
.swatch {{ display: inline-block; width: 2em; margin-right: .4em; vertical-align: middle; }}
.band {{ display: inline-block; width: 2em; height: .8em; background: {BAND_COLOR}; margin-right: .4em; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>Every {traces.interval_minutes:g} minutes, {result['series']['start']} to {result['series']['end']};
capacity per replica {cpr:.4g}; new replicas serve {result['settings']['boot_steps']} steps after they are
requested.{bucket_note}</p>
{series_panel.svg(labels, traces.score_from)}
<ul class="legend"><li><span class="swatch" style="border-top: 2px solid {DEMAND_COLOR}"></span>demand</li>
<li><span class="band"></span>forecast band {band}, {traces.horizon} steps ahead</li></ul>
{replicas_panel.svg(labels, traces.score_from)}
{_legend(entries)}
<pre>{html.escape(summary_text)}</pre>
</body>
</html>
"""


def write_plot(path: Path, result: dict[str, Any], traces: Traces, summary_text: str) -> None:
    try:
        path.write_text(render_html(result, traces, summary_text), encoding="utf-8")
    except OSError as exc:
        raise BacktestError(f"{path}: cannot write the plot: {exc.strerror or exc}") from None
