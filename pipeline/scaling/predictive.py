"""Predictive policy: provision for a forecast quantile one boot time ahead.

With ``lead_steps = L`` a replica requested now serves forecast step ``L + 1`` onwards, and a replica
removed now cannot be brought back before step ``L + 1``. Hence:

* scale-out need: ``ceil(max(q-quantile of steps L+1 .. H) / (capacity_per_replica * target))``;
* scale-in floor: ``ceil(max(upper band of steps 1 .. H) / (capacity_per_replica * target))`` - the
  policy only scales in as far as the upper band over the whole look-ahead allows;
* desired: the need when it is at least the current count, else ``max(need, min(current, floor))``.

The policy abstains (``desired is None``) while the forecast is missing, too short or warming up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.scaling.forecast import Forecast
from pipeline.scaling.policies import PredictivePolicy


@dataclass(frozen=True)
class PredictiveResult:
    desired: int | None
    reason: str
    details: dict[str, float | int | str | None] = field(default_factory=dict)


def predictive_desired(
    policy: PredictivePolicy,
    forecast: Forecast | None,
    current_replicas: int,
    capacity_per_replica: float,
    bounds: tuple[int, int] | None = None,
) -> PredictiveResult:
    """The policy's desired replicas, clamped to ``bounds`` (default: the policy's own min / max;
    :func:`~pipeline.scaling.decide.decide` passes the workload's effective bounds, which active
    scheduled windows may have replaced)."""
    if capacity_per_replica <= 0:
        raise ValueError("capacity_per_replica must be positive")
    if forecast is None:
        return PredictiveResult(None, "no forecast available")
    lead = policy.lead_steps
    horizon = min(policy.effective_horizon, forecast.horizon)
    if horizon < lead + 1:
        return PredictiveResult(
            None,
            f"forecast covers {forecast.horizon} steps, the policy needs step {lead + 1}",
        )
    seen = min(forecast.residuals_seen[:horizon], default=0) if forecast.residuals_seen else 0
    if seen < policy.min_residuals:
        return PredictiveResult(
            None,
            f"forecast warming up ({seen} of {policy.min_residuals} residuals behind the band)",
            {"residuals_seen": seen},
        )
    unit = capacity_per_replica * policy.target_utilization
    q_values = forecast.quantile(policy.quantile)
    upper_level = policy.effective_scale_in_quantile
    upper_values = forecast.quantile(upper_level)
    out_step = max(range(lead, horizon), key=lambda i: q_values[i])
    out_demand = q_values[out_step]
    need = max(math.ceil(out_demand / unit - 1e-9), 0)
    in_step = max(range(horizon), key=lambda i: upper_values[i])
    upper_demand = upper_values[in_step]
    floor = max(math.ceil(upper_demand / unit - 1e-9), 0)
    details: dict[str, float | int | str | None] = {
        "quantile": policy.quantile,
        "provisioned_demand": out_demand,
        "provisioned_step": out_step + 1,
        "scale_in_quantile": upper_level,
        "upper_band_max": upper_demand,
        "upper_band_step": in_step + 1,
        "need": need,
        "scale_in_floor": floor,
    }
    if need >= current_replicas:
        desired = need
        reason = (
            f"q{policy.quantile:g} forecast {out_demand:.4g} at step {out_step + 1} needs {need} replicas "
            f"at {policy.target_utilization:g} utilization"
        )
    else:
        desired = max(need, min(current_replicas, floor))
        if desired == current_replicas:
            reason = (
                f"scale-in held: upper band q{upper_level:g} reaches {upper_demand:.4g} at step "
                f"{in_step + 1} ({floor} replicas)"
            )
        elif desired > need:
            reason = f"scale-in limited to {desired} by the upper band q{upper_level:g} ({upper_demand:.4g})"
        else:
            reason = f"scale-in to {desired}: upper band q{upper_level:g} allows it"
    lo, hi = bounds if bounds is not None else (policy.min_replicas, policy.max_replicas)
    desired = min(max(desired, lo), hi)
    return PredictiveResult(desired, reason, details)


def required_quantiles(policies: Sequence[object], band: Sequence[float] = (0.1, 0.9)) -> tuple[float, ...]:
    """Quantile levels the forecaster should return for ``policies`` (plus the displayed ``band``).

    Pass the result to :meth:`pipeline.scaling.forecast.OnlineForecaster.forecast` so the predictive
    policies read exact levels rather than interpolated ones.
    """
    levels = set(band)
    for policy in policies:
        if isinstance(policy, PredictivePolicy) and policy.enabled:
            levels.add(policy.quantile)
            levels.add(policy.effective_scale_in_quantile)
    return tuple(sorted(levels))
