"""Loading a recorded series from CSV onto a regular time grid."""

from __future__ import annotations

import csv
import itertools
import logging
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.scaling.backtest.errors import BacktestError

MAX_HEADER_ROWS = 10
MIN_STEPS = 50

logger = logging.getLogger(__name__)


@dataclass
class Series:
    start: datetime
    interval_minutes: float
    values: list[float | None]
    rows: int
    skipped_header_rows: int
    duplicate_rows: int
    missing_steps: int

    def timestamp(self, step: int) -> datetime:
        return self.start + timedelta(minutes=self.interval_minutes * step)


def parse_time(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        try:
            seconds = float(text)
        except ValueError:
            return None
        if not math.isfinite(seconds):
            return None
        return datetime.fromtimestamp(seconds, tz=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_value(text: str) -> float | None:
    """A float, ``None`` for an empty / NaN cell; raises ValueError for anything else."""
    text = text.strip()
    if text == "" or text.lower() in {"nan", "null", "none", "na"}:
        return None
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return value


def load_series(path: Path, time_column: str, value_column: str, interval_minutes: float) -> Series:
    """Read a CSV with a header row, a time column and a numeric column onto a regular grid.

    Up to ten non-data rows right after the header (type / flag rows, as in the NYC taxi file) are
    skipped. Duplicate timestamps keep the last row; missing grid steps become ``None``.
    """
    if not (interval_minutes > 0 and math.isfinite(interval_minutes)):
        raise BacktestError("--interval-minutes must be a positive number")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise BacktestError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BacktestError(f"{path}: cannot read as CSV: {exc}") from None
    if not rows:
        raise BacktestError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    for column in (time_column, value_column):
        if column not in header:
            raise BacktestError(f"{path}: no column {column!r} in header {header}")
    ti, vi = header.index(time_column), header.index(value_column)
    points: list[tuple[datetime, float | None]] = []
    skipped = 0
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) <= max(ti, vi):
            raise BacktestError(f"{path}: row {number} has {len(row)} fields, expected {len(header)}")
        stamp = parse_time(row[ti])
        try:
            value = parse_value(row[vi])
            bad_value = False
        except ValueError:
            value, bad_value = None, True
        if not points and (stamp is None or bad_value):
            skipped += 1
            if skipped > MAX_HEADER_ROWS:
                raise BacktestError(f"{path}: no data rows found after {MAX_HEADER_ROWS} non-data rows")
            continue
        if stamp is None:
            raise BacktestError(f"{path}: row {number}: cannot parse time {row[ti]!r} in column {time_column!r}")
        if bad_value:
            raise BacktestError(f"{path}: row {number}: value {row[vi]!r} in column {value_column!r} is not a number")
        if points and stamp < points[-1][0]:
            raise BacktestError(f"{path}: row {number}: timestamps go backwards ({stamp} after {points[-1][0]})")
        points.append((stamp, value))
    if len(points) < MIN_STEPS:
        raise BacktestError(f"{path}: {len(points)} data rows, at least {MIN_STEPS} are needed")
    step = interval_minutes * 60.0
    gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(points)]
    positive = [g for g in gaps if g > 0]
    median_gap = statistics.median(positive) if positive else 0.0
    if not positive or abs(median_gap - step) > 0.1 * step:
        raise BacktestError(
            f"{path}: rows are {median_gap / 60:g} minutes apart (median), not --interval-minutes {interval_minutes:g}"
        )
    start = points[0][0]
    grid: dict[int, float | None] = {}
    duplicates = 0
    for stamp, value in points:
        index = round((stamp - start).total_seconds() / step)
        if index in grid:
            duplicates += 1
        grid[index] = value
    length = max(grid) + 1
    values: list[float | None] = [grid.get(i) for i in range(length)]
    missing = sum(1 for v in values if v is None)
    if missing > 0.2 * length:
        raise BacktestError(f"{path}: {missing} of {length} steps are missing or empty (more than 20 %)")
    if any(v is not None and v < 0 for v in values):
        logger.warning("%s has negative values; demand is clipped at zero in the policy simulation", path)
    return Series(
        start=start,
        interval_minutes=interval_minutes,
        values=values,
        rows=len(rows),
        skipped_header_rows=skipped,
        duplicate_rows=duplicates,
        missing_steps=missing,
    )


