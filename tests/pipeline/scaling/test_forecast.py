from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.scaling.forecast import (
    Forecast,
    ForecasterConfig,
    OnlineForecaster,
    SnapshotError,
    SnapshotVersionError,
)


def seasonal(n: int, day: int = 24, noise_seed: int = 7) -> list[float]:
    """Hourly series with a daily and a weekly cycle and deterministic pseudo-noise."""
    out = []
    state = noise_seed
    for t in range(n):
        state = (1103515245 * state + 12345) % 2**31
        noise = (state / 2**31 - 0.5) * 4.0
        weekly = 15.0 if (t // day) % 7 in (5, 6) else 0.0
        out.append(100.0 + 40.0 * math.sin(2 * math.pi * t / day) - weekly + noise)
    return out


def wmape(pairs: list[tuple[float, float]]) -> float:
    return sum(abs(a - b) for a, b in pairs) / sum(abs(a) for a, _ in pairs)


def run(values: list[float], config: ForecasterConfig, start_scoring: int) -> list[tuple[float, float]]:
    model = OnlineForecaster(config)
    h = config.horizon
    preds: dict[int, float] = {}
    for t, v in enumerate(values):
        model.learn_one(v)
        preds[t] = model.forecast(()).mean[h - 1]
    return [(values[t + h], preds[t]) for t in range(start_scoring, len(values) - h)]


def test_learns_a_seasonal_series_better_than_naive_forecasts() -> None:
    values = seasonal(24 * 7 * 5)
    config = ForecasterConfig(interval_minutes=60, horizon=3)
    pairs = run(values, config, 24 * 7 * 3)
    model_error = wmape(pairs)
    start = 24 * 7 * 3
    last_value = wmape([(values[t + 3], values[t]) for t in range(start, len(values) - 3)])
    last_week = wmape([(values[t + 3], values[t + 3 - 168]) for t in range(start, len(values) - 3)])
    assert model_error < last_value
    assert model_error < last_week
    assert model_error < 0.03


def test_forecast_shape_band_order_and_nonnegative() -> None:
    config = ForecasterConfig(interval_minutes=60, horizon=4, quantiles=(0.1, 0.5, 0.9))
    model = OnlineForecaster(config)
    for v in seasonal(24 * 10):
        model.learn_one(v)
    fc = model.forecast()
    assert fc.horizon == 4
    assert fc.observations == 240
    assert set(fc.quantiles) == {0.1, 0.5, 0.9}
    for i in range(4):
        assert fc.quantiles[0.1][i] <= fc.quantiles[0.5][i] <= fc.quantiles[0.9][i]
        assert fc.quantiles[0.1][i] >= 0.0
    assert all(n > 100 for n in fc.residuals_seen)


def test_band_covers_roughly_its_nominal_share() -> None:
    values = seasonal(24 * 7 * 4)
    model = OnlineForecaster(ForecasterConfig(interval_minutes=60, horizon=2, band_window=200))
    inside = total = 0
    pending: dict[int, tuple[float, float]] = {}
    for t, v in enumerate(values):
        if t - 2 in pending and t > 24 * 7 * 2:
            lo, hi = pending.pop(t - 2)
            inside += lo <= v <= hi
            total += 1
        model.learn_one(v)
        fc = model.forecast((0.1, 0.9))
        pending[t] = (fc.quantiles[0.1][1], fc.quantiles[0.9][1])
    assert 0.65 <= inside / total <= 0.95


def test_starts_without_history_and_before_lags_exist() -> None:
    model = OnlineForecaster(ForecasterConfig(interval_minutes=5, horizon=3))
    fc0 = model.forecast()
    assert fc0.mean == (0.0, 0.0, 0.0)
    model.learn_one(5.0)
    assert model.forecast().mean == (5.0, 5.0, 5.0)
    for v in (5.0, 6.0, 7.0, 6.0):
        model.learn_one(v)
    assert all(math.isfinite(x) for x in model.forecast().mean)


def test_missing_values_and_gaps_are_imputed() -> None:
    config = ForecasterConfig(interval_minutes=60, horizon=2)
    model = OnlineForecaster(config)
    base = 1_700_000_000.0
    for t, v in enumerate(seasonal(60)):
        model.learn_one(v, at=base + 3600 * t)
    model.learn_one(None, at=base + 3600 * 60)
    model.learn_one(float("nan"), at=base + 3600 * 61)
    model.learn_one(100.0, at=base + 3600 * 65)  # three windows skipped
    assert model.observations == 66
    model.learn_one(101.0, at=datetime.fromtimestamp(base + 3600 * 67, tz=UTC))
    assert model.observations == 68
    with pytest.raises(ValueError, match="timezone-aware"):
        model.learn_one(1.0, at=datetime(2026, 1, 1))
    assert all(math.isfinite(x) for x in model.forecast().mean)


def test_config_validation_and_periods() -> None:
    with pytest.raises(ValueError, match="interval_minutes"):
        ForecasterConfig(interval_minutes=0)
    with pytest.raises(ValueError, match="horizon"):
        ForecasterConfig(interval_minutes=5, horizon=0)
    with pytest.raises(ValueError, match="quantile"):
        ForecasterConfig(interval_minutes=5, quantiles=(1.0,))
    five = ForecasterConfig(interval_minutes=5)
    assert (five.daily_period, five.weekly_period) == (288, 2016)
    assert five.seasonal_lags() == (288, 2016, 4032)
    daily = ForecasterConfig(interval_minutes=1440)
    assert daily.daily_period is None
    assert daily.seasonal_lags() == (7, 14)
    one_minute = ForecasterConfig(interval_minutes=1)
    assert one_minute.seasonal_lags() == (1440,)  # a week of minutes does not fit the default history
    assert ForecasterConfig.from_dict(five.to_dict()) == five


def test_forecast_quantile_interpolation_and_dict_round_trip() -> None:
    fc = Forecast(
        observations=10,
        interval_minutes=5,
        mean=(10.0, 20.0),
        quantiles={0.1: (8.0, 16.0), 0.9: (12.0, 24.0)},
        residuals_seen=(40, 40),
    )
    assert fc.quantile(0.5) == pytest.approx((10.0, 20.0))
    assert fc.quantile(0.99) == (12.0, 24.0)
    assert fc.quantile(0.01) == (8.0, 16.0)
    assert Forecast.from_dict(fc.to_dict()) == fc


def test_snapshot_round_trip_continues_identically() -> None:
    values = seasonal(24 * 9)
    config = ForecasterConfig(interval_minutes=60, horizon=3)
    original = OnlineForecaster(config)
    for v in values[:150]:
        original.learn_one(v)
    restored = OnlineForecaster.from_snapshot(original.to_snapshot())
    assert restored.observations == original.observations
    assert restored.forecast() == original.forecast()
    for v in values[150:]:
        original.learn_one(v)
        restored.learn_one(v)
        assert restored.forecast() == original.forecast()


def _with_version(snapshot: bytes, version: str) -> bytes:
    outer = pickle.loads(snapshot)  # noqa: S301 - our own test data
    outer["river_version"] = version
    outer["models"] = b"not a pickle that this version could read"
    return pickle.dumps(outer)


def test_snapshot_from_another_river_version_is_rebuilt_or_refused() -> None:
    values = seasonal(24 * 12)
    config = ForecasterConfig(interval_minutes=60, horizon=2)
    model = OnlineForecaster(config)
    for v in values:
        model.learn_one(v)
    foreign = _with_version(model.to_snapshot(), "0.0.1")
    with pytest.raises(SnapshotVersionError, match=r"river 0\.0\.1"):
        OnlineForecaster.from_snapshot(foreign, on_version_mismatch="raise")
    rebuilt = OnlineForecaster.from_snapshot(foreign)
    assert rebuilt.observations == model.observations
    assert rebuilt.history() == model.history()
    fresh, old = rebuilt.forecast().mean, model.forecast().mean
    assert all(abs(a - b) / b < 0.1 for a, b in zip(fresh, old, strict=True))


def test_snapshot_rejects_garbage_and_foreign_objects() -> None:
    with pytest.raises(SnapshotError):
        OnlineForecaster.from_snapshot(b"garbage")
    with pytest.raises(SnapshotError, match="not allowed"):
        OnlineForecaster.from_snapshot(pickle.dumps({"format": 1, "x": Path("/")}))
    with pytest.raises(SnapshotError, match="format"):
        OnlineForecaster.from_snapshot(pickle.dumps({"format": 99}))


def taxi_like(n: int, seed: int = 2014) -> list[float]:
    """Half-hourly demand shaped like the NYC taxi series (night trough, morning ramp, evening peak, quieter
    weekends), with a drifting daily level, holidays and 5% noise: what "same slot last week" gets wrong.

    The real series (AGPL-3.0 in its source repository, so not copied here) is replayed by
    ``bench/scaling_backtest.py`` against the published scores."""
    rng = random.Random(seed)
    day, level, holiday = 48, 1.0, False
    out = []
    for t in range(n):
        if t % day == 0:
            level = min(1.3, max(0.7, level * math.exp(rng.gauss(0, 0.04))))
            holiday = rng.random() < 0.04
        hour = (t % day) / 2
        awake = 0.15 + 0.85 / (1 + math.exp(-(hour - 7) * 1.5))
        evening = 0.35 * math.exp(-((hour - 19) ** 2) / 8)
        weekend = 0.8 if (t // day) % 7 >= 5 else 1.0
        base = 15000 * level * weekend * (awake + evening) * (0.6 if holiday else 1.0)
        out.append(max(0.0, base * (1 + rng.gauss(0, 0.05))))
    return out


def test_taxi_like_series_beats_same_slot_last_week() -> None:
    values = taxi_like(3000)
    pairs = run(values, ForecasterConfig(interval_minutes=30, horizon=5), 1500)
    naive = [(values[t + 5], values[t + 5 - 336]) for t in range(1500, len(values) - 5)]
    assert wmape(pairs) < 0.7 * wmape(naive)
