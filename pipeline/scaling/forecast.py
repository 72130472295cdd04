"""Online multi-step demand forecaster built on River.

One :class:`OnlineForecaster` per (tenant, workload). It learns one observation at a time (one closed
utilization window) and forecasts the next ``horizon`` steps with an uncertainty band.

Model (the same for every series; only the sampling interval changes the seasonal lags):

* a robust seasonal baseline ``b[k]`` for the target step ``k``: the median of the same slot one day,
  one week and two weeks back (the mean of those available, the last value when none is);
* one ``river.linear_model.LinearRegression`` per horizon step ``h`` (Huber loss, plain SGD) that
  learns the target ``(y[k] - b[k]) / s`` from a handful of features, all divided by a running scale
  ``s`` (an exponentially weighted mean of ``|y|``): how far the current value is from its own
  baseline, week-over-week and day-over-day deltas at the origin and just before it, the recent
  slope, short- and longer-term smoothed levels relative to the target's baseline, and how last
  week / yesterday / two weeks ago differ from the baseline at the target slot. A few of them are
  also given per phase-of-day bucket so that the persistence of a deviation can depend on the time
  of day;
* the band: per horizon step, a sliding window of the last ``band_window`` residuals of the
  forecasts actually issued (divided by the running scale), kept sorted so that any quantile level
  can be read at forecast time.

Model work is about 7 us of CPU per horizon step and sample (``docs/scaling.md``): cheap enough to
run inline in an agent.

Snapshots (:meth:`OnlineForecaster.to_snapshot`) are two-layer: an outer pickle made only of builtins
(format, River version, config, the raw history) that is read with a restricted unpickler, and an
inner pickle of the River models. When the River version differs, the inner layer is not unpickled;
the models are rebuilt by replaying the stored history (or :class:`SnapshotVersionError` is raised
when ``on_version_mismatch="raise"``). Only load snapshots that this service wrote itself: the inner
layer is a full pickle (the engine verifies each snapshot's HMAC before it gets here:
:mod:`pipeline.scaling.snapshot_signing`).
"""

from __future__ import annotations

import bisect
import io
import logging
import math
import pickle
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from river import linear_model, optim
from river.__version__ import __version__ as RIVER_VERSION

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
MINUTES_PER_DAY = 1440.0


class SnapshotError(ValueError):
    """A snapshot cannot be read (corrupt, wrong format)."""


class SnapshotVersionError(SnapshotError):
    """A snapshot was written with another River version and rebuilding was not allowed."""

    def __init__(self, snapshot_version: str, running_version: str) -> None:
        super().__init__(
            f"forecaster snapshot was written with river {snapshot_version}, this worker runs river "
            f"{running_version}; rebuild it from its history (on_version_mismatch='rebuild')"
        )
        self.snapshot_version = snapshot_version
        self.running_version = running_version


@dataclass(frozen=True)
class ForecasterConfig:
    """Parameters of one forecaster. Plain values only, so it can live in settings or a table."""

    interval_minutes: float
    """Sampling interval of the series; fixes the daily and weekly lags (in steps)."""
    horizon: int = 12
    """Number of future steps forecast at each origin."""
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    """Quantile levels returned by :meth:`OnlineForecaster.forecast` when none are asked for."""
    learning_rate: float = 0.05
    huber_epsilon: float = 0.05
    """Huber loss threshold, in units of the running scale of the series."""
    intercept_lr: float = 0.01
    l2: float = 0.0
    band_window: int = 500
    """Residuals kept per horizon step for the quantile band."""
    scale_alpha: float | None = None
    """Smoothing of the running scale (EW mean of |y|); default ``1 / weekly period`` (bounded)."""
    phase_buckets: int = 6
    """Phase-of-day buckets for the interaction features (0 disables them)."""
    daily_seasonality: bool = True
    weekly_seasonality: bool = True
    max_history_steps: int = 2 * 7 * 288 + 64
    """Upper bound of the history ring buffer; lags that do not fit are dropped."""
    band_scaling: Literal["level", "series"] = "series"
    """Residuals behind the band are divided by the running scale of the series (``series``) or by
    the mean of that scale and the baseline of the target step (``level``: wider bands at busy
    hours; unstable on on/off series)."""
    nonnegative: bool = True
    """Clip forecasts and band at zero (demand cannot be negative)."""
    max_gap_fill_steps: int | None = None
    """Missing steps filled with imputed values when :meth:`~OnlineForecaster.learn_one` is given a
    timestamp gap; default: the ring buffer length."""

    def __post_init__(self) -> None:
        if not (self.interval_minutes > 0 and math.isfinite(self.interval_minutes)):
            raise ValueError("interval_minutes must be a positive number")
        if self.horizon < 1:
            raise ValueError("horizon must be at least 1")
        if any(not 0.0 < q < 1.0 for q in self.quantiles):
            raise ValueError("quantile levels must be strictly between 0 and 1")
        if self.band_window < 10:
            raise ValueError("band_window must be at least 10")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.phase_buckets < 0:
            raise ValueError("phase_buckets must be >= 0")

    @property
    def daily_period(self) -> int | None:
        """Steps per day, or ``None`` when daily seasonality is off or meaningless."""
        steps = round(MINUTES_PER_DAY / self.interval_minutes)
        if not self.daily_seasonality or steps < 2:
            return None
        return steps

    @property
    def weekly_period(self) -> int | None:
        steps = round(7 * MINUTES_PER_DAY / self.interval_minutes)
        if not self.weekly_seasonality or steps < 2:
            return None
        return steps

    def seasonal_lags(self) -> tuple[int, ...]:
        """Lags (in steps) whose same-slot values form the baseline, those that fit the history."""
        lags: list[int] = []
        day, week = self.daily_period, self.weekly_period
        cap = self.max_history_steps - self.horizon - 4
        if day is not None and day <= cap:
            lags.append(day)
        if week is not None and week <= cap:
            lags.append(week)
            if 2 * week <= cap:
                lags.append(2 * week)
        return tuple(lags)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quantiles"] = list(self.quantiles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForecasterConfig:
        values = dict(data)
        if "quantiles" in values:
            values["quantiles"] = tuple(values["quantiles"])
        return cls(**values)


@dataclass(frozen=True)
class Forecast:
    """Forecast of the next ``len(mean)`` steps made after ``observations`` observations.

    ``mean[i]`` is the point forecast ``i + 1`` steps ahead; ``quantiles[level][i]`` the band at that
    level. Plain floats and tuples: cheap to build on the hot path, :meth:`to_dict` for JSON.
    """

    observations: int
    interval_minutes: float
    mean: tuple[float, ...]
    quantiles: dict[float, tuple[float, ...]] = field(default_factory=dict)
    residuals_seen: tuple[int, ...] = ()
    """Residuals behind each step's band; a band from fewer than ~30 is unreliable."""

    @property
    def horizon(self) -> int:
        return len(self.mean)

    def quantile(self, level: float) -> tuple[float, ...]:
        """Band values at ``level``, linearly interpolated between the tracked levels.

        Outside the tracked range the nearest tracked level is used (never extrapolated); with no
        tracked level at all the point forecast is returned.
        """
        if level in self.quantiles:
            return self.quantiles[level]
        if not self.quantiles:
            return self.mean
        levels = sorted(self.quantiles)
        if level <= levels[0]:
            return self.quantiles[levels[0]]
        if level >= levels[-1]:
            return self.quantiles[levels[-1]]
        hi = bisect.bisect_left(levels, level)
        lo_level, hi_level = levels[hi - 1], levels[hi]
        w = (level - lo_level) / (hi_level - lo_level)
        lo_values, hi_values = self.quantiles[lo_level], self.quantiles[hi_level]
        return tuple(a + w * (b - a) for a, b in zip(lo_values, hi_values, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "observations": self.observations,
            "interval_minutes": self.interval_minutes,
            "mean": list(self.mean),
            "quantiles": {f"{level:g}": list(values) for level, values in sorted(self.quantiles.items())},
            "residuals_seen": list(self.residuals_seen),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Forecast:
        return cls(
            observations=int(data["observations"]),
            interval_minutes=float(data["interval_minutes"]),
            mean=tuple(float(v) for v in data["mean"]),
            quantiles={float(level): tuple(float(v) for v in values) for level, values in data["quantiles"].items()},
            residuals_seen=tuple(int(v) for v in data.get("residuals_seen", ())),
        )


class _ResidualWindow:
    """Last ``size`` residuals, kept both in arrival order and sorted (for any quantile)."""

    __slots__ = ("fifo", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.fifo: deque[float] = deque()
        self.sorted: list[float] = []

    def append(self, value: float) -> None:
        if len(self.fifo) >= self.size:
            old = self.fifo.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.fifo.append(value)
        bisect.insort(self.sorted, value)

    def quantile(self, level: float) -> float:
        """Linear-interpolated empirical quantile (numpy's default 'linear' method)."""
        data = self.sorted
        n = len(data)
        if n == 0:
            return 0.0
        pos = level * (n - 1)
        i = int(pos)
        if i >= n - 1:
            return data[-1]
        frac = pos - i
        return data[i] + frac * (data[i + 1] - data[i])

    def __len__(self) -> int:
        return len(self.fifo)

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size, "values": list(self.fifo)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        self.fifo = deque(float(v) for v in state["values"])
        self.sorted = sorted(self.fifo)


# A pending sample of one (origin, horizon) pair: [features, baseline, scale, band scale, prediction
# issued by forecast() or None]. A list so that forecast() can record the prediction it issued.
_Pending = list[Any]


class OnlineForecaster:
    """Online forecaster of one univariate series sampled every ``config.interval_minutes``.

    Call :meth:`learn_one` when a window closes, then :meth:`forecast`. Not thread-safe; one
    instance per (tenant, workload), owned by one agent.
    """

    def __init__(self, config: ForecasterConfig) -> None:
        self.config = config
        self._lags = config.seasonal_lags()
        self._day = config.daily_period if config.daily_period in self._lags else None
        self._week = config.weekly_period if config.weekly_period in self._lags else None
        self._week2 = 2 * self._week if self._week is not None and 2 * self._week in self._lags else None
        max_lag = max(self._lags, default=0)
        self._cap = max(max_lag + config.horizon + 4, 8)
        self._buf = array("d", bytes(8 * self._cap))
        self._n = 0  # observations seen; last observation has index n - 1
        self._first = 0  # index of the first observation this instance holds
        self._scale = 0.0
        self._scale_alpha = self._default_scale_alpha()
        self._ema_dev = 0.0
        self._level_fast = 0.0  # EW means of y (alpha 0.3 and 0.08): short-term level
        self._level_slow = 0.0
        self._last_time: float | None = None  # epoch seconds of the last observation, when known
        self._phase_names = self._make_phase_names()
        # Baselines of target steps, reused while the origin moves: exact when every seasonal lag is
        # longer than the horizon (all the values they read are already known).
        self._cache_baselines = bool(self._lags) and min(self._lags) > config.horizon
        self._bcache: dict[int, float] = {}
        self.models = [self._new_model() for _ in range(config.horizon)]
        self.windows = [_ResidualWindow(config.band_window) for _ in range(config.horizon)]
        # pending[j] = per-horizon samples made at origin n - 1 - j (most recent first)
        self._pending: deque[list[_Pending] | None] = deque(maxlen=config.horizon)

    # ----------------------------------------------------------------- construction helpers
    def _default_scale_alpha(self) -> float:
        if self.config.scale_alpha is not None:
            return self.config.scale_alpha
        period = self.config.weekly_period or self.config.daily_period or 48
        return min(max(1.0 / period, 1e-4), 0.1)

    def _make_phase_names(self) -> list[tuple[str, str, str]]:
        buckets = self.config.phase_buckets if self._day is not None else 0
        return [(f"lv@{b}", f"dw@{b}", f"bd@{b}") for b in range(buckets)]

    def _new_model(self) -> linear_model.LinearRegression:
        return linear_model.LinearRegression(
            optimizer=optim.SGD(self.config.learning_rate),
            loss=optim.losses.Huber(self.config.huber_epsilon),
            l2=self.config.l2,
            intercept_lr=self.config.intercept_lr,
        )

    # ----------------------------------------------------------------- properties
    @property
    def observations(self) -> int:
        """Number of observations learned (imputed gap steps included)."""
        return self._n

    @property
    def horizon(self) -> int:
        return self.config.horizon

    def history(self) -> list[float]:
        """The observations kept in the ring buffer, oldest first."""
        start = max(self._first, self._n - self._cap)
        return [self._buf[i % self._cap] for i in range(start, self._n)]

    # ----------------------------------------------------------------- learning
    def learn_one(self, y: float | None, at: datetime | float | None = None) -> None:
        """Learn the observation of the step that just closed.

        ``y`` ``None`` or NaN marks a missing window: the value is imputed (seasonal baseline) and
        nothing is learned from it. ``at`` (the window's timezone-aware datetime or epoch seconds,
        optional) lets the forecaster notice skipped windows and impute them, so the seasonal lags
        stay aligned.
        """
        if at is not None:
            if isinstance(at, datetime):
                if at.tzinfo is None or at.utcoffset() is None:
                    raise ValueError("learn_one needs a timezone-aware datetime")
                at = at.timestamp()
            self._fill_gap(at)
            self._last_time = at
        if y is None or not math.isfinite(y):
            self._observe(self._impute(), learn=False)
        else:
            self._observe(float(y), learn=True)

    def learn_many(self, values: Iterable[float | None]) -> None:
        """Learn consecutive observations (e.g. replaying history)."""
        for value in values:
            self.learn_one(value)

    def _fill_gap(self, at: float) -> None:
        if self._last_time is None:
            return
        step_seconds = self.config.interval_minutes * 60.0
        missing = round((at - self._last_time) / step_seconds) - 1
        if missing <= 0:
            return
        limit = self.config.max_gap_fill_steps
        limit = self._cap if limit is None else limit
        if missing > limit:
            logger.warning("forecaster gap of %d steps exceeds %d; filling only the last ones", missing, limit)
            missing = limit
        for _ in range(missing):
            self._observe(self._impute(), learn=False)

    def _impute(self) -> float:
        if self._n == self._first:
            return 0.0
        return self._baseline(self._n)

    def _baseline(self, k: int) -> float:
        """Robust seasonal baseline for step ``k`` from values known now (index <= n - 1)."""
        seasonal = self._seasonal_baseline(k)
        if seasonal is not None:
            return seasonal
        n = self._n
        return self._buf[(n - 1) % self._cap] if n > self._first else 0.0

    def _seasonal_baseline(self, k: int) -> float | None:
        """Median (or mean of two, or the one) same-slot value one day / week / two weeks back."""
        n, cap, buf = self._n, self._cap, self._buf
        lo = max(n - cap, self._first)
        cands: list[float] = []
        for lag in self._lags:
            i = k - lag
            if lo <= i < n:
                cands.append(buf[i % cap])
        if len(cands) == 3:
            a, b, c = cands
            return a + b + c - max(a, b, c) - min(a, b, c)
        if len(cands) == 2:
            return 0.5 * (cands[0] + cands[1])
        if cands:
            return cands[0]
        return None

    def _observe(self, y: float, *, learn: bool) -> None:
        cap = self._cap
        t = self._n
        self._buf[t % cap] = y
        self._n = t + 1
        if t == self._first:
            self._scale = abs(y)
            self._level_fast = self._level_slow = y
        else:
            self._scale += self._scale_alpha * (abs(y) - self._scale)
            self._level_fast += 0.3 * (y - self._level_fast)
            self._level_slow += 0.08 * (y - self._level_slow)
        # Learn every pending (origin, horizon) sample whose target is step t.
        if learn:
            for j, samples in enumerate(self._pending):
                h = j + 1  # pending[j] was made at origin t - 1 - j, so its horizon-(j+1) target is t
                if samples is None or h > len(samples):
                    continue
                x, base, scale, band_scale, pred = samples[h - 1]
                model = self.models[h - 1]
                target = (y - base) / scale
                if pred is None:
                    pred = model.predict_one(x)  # type: ignore[no-untyped-call]
                self.windows[h - 1].append((target - pred) * scale / band_scale)
                model.learn_one(x, target)
        self._pending.appendleft(self._features())

    def _features(self) -> list[_Pending] | None:
        """Features of origin n - 1 for each horizon step (None before the second observation)."""
        n, cap, buf = self._n, self._cap, self._buf
        t = n - 1
        if t < self._first + 1:
            return None
        s = self._scale if self._scale > 1e-12 else 1.0
        inv = 1.0 / s
        lo = max(n - cap, self._first)
        yt = buf[t % cap]
        y1 = buf[(t - 1) % cap]
        bcache = self._bcache if self._cache_baselines else None
        bt: float | None = None
        if bcache is not None:
            bt = bcache.pop(t, None)
            bcache.pop(t - 1, None)
        if bt is None:
            bt = self._baseline(t)
        lv = (yt - bt) * inv
        self._ema_dev += 0.5 * (lv - self._ema_dev)
        origin: dict[str, float] = {"lv": lv, "ema": self._ema_dev, "slope": (yt - y1) * inv}
        week, day, week2 = self._week, self._day, self._week2
        dw = 0.0
        if week is not None and t - week - 2 >= lo:
            dw = (yt - buf[(t - week) % cap]) * inv
            origin["dw"] = dw
            origin["dw1"] = (y1 - buf[(t - 1 - week) % cap]) * inv
            origin["dw2"] = (buf[(t - 2) % cap] - buf[(t - 2 - week) % cap]) * inv
            if day is not None and t - day - week >= lo:
                origin["dwd"] = (buf[(t - day) % cap] - buf[(t - day - week) % cap]) * inv
        if day is not None and t - day >= lo:
            origin["dd"] = (yt - buf[(t - day) % cap]) * inv
        phase_names = self._phase_names
        level_fast, level_slow = self._level_fast, self._level_slow
        level_band = self.config.band_scaling == "level"
        samples: list[_Pending] = []
        for h in range(1, self.config.horizon + 1):
            k = t + h
            cached = bcache.get(k) if bcache is not None else None
            if cached is not None:
                b = cached
            else:
                seasonal = self._seasonal_baseline(k)
                if seasonal is None:
                    b = yt  # no seasonal value yet: the last value (not cached, it moves)
                else:
                    b = seasonal
                    if bcache is not None:
                        bcache[k] = b
            x = dict(origin)
            x["yk"] = (yt - b) * inv
            x["mk"] = (level_fast - b) * inv
            x["mk2"] = (level_slow - b) * inv
            bd = 0.0
            if week is not None and lo <= k - week <= t:
                x["bw"] = (buf[(k - week) % cap] - b) * inv
                if k - week - 1 >= lo and k - week + 1 <= t:
                    x["bwp"] = (buf[(k - week + 1) % cap] - buf[(k - week - 1) % cap]) * inv
            if day is not None and lo <= k - day <= t:
                bd = (buf[(k - day) % cap] - b) * inv
                x["bd"] = bd
            if week2 is not None and lo <= k - week2 <= t:
                x["bw2"] = (buf[(k - week2) % cap] - b) * inv
            if phase_names and day is not None:  # phase of the target step within the day
                names = phase_names[((k % day) * len(phase_names)) // day]
                x[names[0]] = lv
                x[names[1]] = dw
                x[names[2]] = bd
            band_scale = 0.5 * (abs(b) + s) if level_band else s
            samples.append([x, b, s, band_scale if band_scale > 1e-12 else 1.0, None])
        return samples

    # ----------------------------------------------------------------- forecasting
    def forecast(self, quantiles: Sequence[float] | None = None) -> Forecast:
        """Forecast the next ``horizon`` steps after the last observation.

        ``quantiles``: band levels to return (default ``config.quantiles``). Before any residual has
        been seen for a step, its band collapses to the point forecast.
        """
        levels = tuple(self.config.quantiles if quantiles is None else quantiles)
        samples = self._pending[0] if self._pending else None
        horizon = self.config.horizon
        if samples is None:
            last = self._buf[(self._n - 1) % self._cap] if self._n else 0.0
            flat = (last,) * horizon
            return Forecast(
                observations=self._n,
                interval_minutes=self.config.interval_minutes,
                mean=flat,
                quantiles={q: flat for q in levels},
                residuals_seen=(0,) * horizon,
            )
        clip = self.config.nonnegative
        means: list[float] = []
        bands: dict[float, list[float]] = {q: [] for q in levels}
        seen: list[int] = []
        for h in range(horizon):
            sample = samples[h]
            x, base, scale, band_scale, raw = sample
            if raw is None:
                raw = sample[4] = self.models[h].predict_one(x)  # type: ignore[no-untyped-call]
            mean = base + scale * raw
            if clip and mean < 0.0:
                mean = 0.0
            means.append(mean)
            window = self.windows[h]
            seen.append(len(window))
            for q in levels:
                v = mean + band_scale * window.quantile(q)
                bands[q].append(0.0 if clip and v < 0.0 else v)
        return Forecast(
            observations=self._n,
            interval_minutes=self.config.interval_minutes,
            mean=tuple(means),
            quantiles={q: tuple(v) for q, v in bands.items()},
            residuals_seen=tuple(seen),
        )

    # ----------------------------------------------------------------- snapshots
    def to_snapshot(self) -> bytes:
        """Serialize the forecaster (models, band windows, history) with the River version."""
        models = pickle.dumps(
            {
                "models": self.models,
                "windows": self.windows,
                "pending": list(self._pending),
                "scale": self._scale,
                "ema_dev": self._ema_dev,
                "levels": (self._level_fast, self._level_slow),
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        outer = {
            "format": SNAPSHOT_FORMAT,
            "river_version": RIVER_VERSION,
            "config": self.config.to_dict(),
            "observations": self._n,
            "last_time": self._last_time,
            "history": self._ordered_history_bytes(),
            "models": models,
        }
        return pickle.dumps(outer, protocol=pickle.HIGHEST_PROTOCOL)

    def _ordered_history_bytes(self) -> bytes:
        return array("d", self.history()).tobytes()

    @classmethod
    def from_snapshot(
        cls,
        data: bytes,
        *,
        on_version_mismatch: Literal["rebuild", "raise"] = "rebuild",
    ) -> OnlineForecaster:
        """Restore a forecaster written by :meth:`to_snapshot`.

        With another River version the River models are not unpickled: they are rebuilt by
        replaying the stored history (``"rebuild"``, the default; logged) or
        :class:`SnapshotVersionError` is raised (``"raise"``).
        """
        outer = _safe_loads(data)
        if not isinstance(outer, dict) or outer.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError("not a forecaster snapshot (unknown format)")
        try:
            config = ForecasterConfig.from_dict(outer["config"])
            history = array("d")
            history.frombytes(outer["history"])
            observations = int(outer["observations"])
            version = str(outer["river_version"])
            last_time = outer["last_time"]
            models_blob = outer["models"]
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"corrupt forecaster snapshot: {exc}") from exc
        if version != RIVER_VERSION:
            if on_version_mismatch == "raise":
                raise SnapshotVersionError(version, RIVER_VERSION)
            logger.warning(
                "forecaster snapshot from river %s, running %s: rebuilding from %d stored observations",
                version,
                RIVER_VERSION,
                len(history),
            )
            fresh = cls(config)
            fresh._n = fresh._first = observations - len(history)
            fresh.learn_many(history)
            fresh._last_time = last_time
            return fresh
        state = pickle.loads(models_blob)  # noqa: S301 - written by to_snapshot of this service
        obj = cls(config)
        obj._rebase_history(history, observations)
        obj.models = state["models"]
        obj.windows = state["windows"]
        obj._pending = deque(state["pending"], maxlen=config.horizon)
        obj._scale = float(state["scale"])
        obj._ema_dev = float(state["ema_dev"])
        obj._level_fast, obj._level_slow = (float(v) for v in state["levels"])
        obj._last_time = last_time
        return obj

    def _rebase_history(self, history: Sequence[float], observations: int) -> None:
        """Put ``history`` (the last observations, oldest first) back at absolute indices."""
        self._n = observations
        start = observations - len(history)
        self._first = start
        for offset, value in enumerate(history):
            self._buf[(start + offset) % self._cap] = value


_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "str", "bytes", "int", "float", "bool", "NoneType"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise SnapshotError(f"forecaster snapshot refers to {module}.{name}, which is not allowed")


def _safe_loads(data: bytes) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(f"cannot read forecaster snapshot: {exc}") from exc
