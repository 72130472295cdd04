"""Target tracking with the Kubernetes HPA algorithm and its ``behavior`` semantics.

Follows ``pkg/controller/podautoscaler/horizontal.go`` (Kubernetes 1.2x):

1. raw recommendation ``ceil(demand / (capacity_per_replica * target))``, or the current count while
   the utilization ratio is within ``tolerance`` of 1;
2. stabilization: the recommendation is kept between the minimum of the recommendations of the last
   ``scale_up.stabilization_window_seconds`` and the maximum of those of the last
   ``scale_down.stabilization_window_seconds`` (``stabilizeRecommendationWithBehaviors``);
3. rate limits: the replica count at the start of each policy period is ``current - added + removed``
   in that period; ``Pods`` / ``Percent`` policies give a limit each, ``select_policy`` picks the
   largest change (``Max``), the smallest (``Min``) or none (``Disabled``)
   (``convertDesiredReplicasWithBehaviorRate``).

Time is epoch seconds passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.scaling.policies import Behavior, ScalingRules

# (epoch seconds, replicas)
Recommendation = tuple[float, int]
# (epoch seconds, signed replica change)
ScaleEvent = tuple[float, int]


def raw_recommendation(
    demand: float,
    capacity_per_replica: float,
    current_replicas: int,
    target_utilization: float,
    tolerance: float,
) -> int:
    """Replicas that bring ``demand / (replicas * capacity_per_replica)`` to the target."""
    if capacity_per_replica <= 0:
        raise ValueError("capacity_per_replica must be positive")
    demand = max(demand, 0.0)
    if current_replicas > 0:
        utilization = demand / (current_replicas * capacity_per_replica)
        if abs(utilization / target_utilization - 1.0) <= tolerance:
            return current_replicas
    return math.ceil(demand / (capacity_per_replica * target_utilization) - 1e-9)


def stabilize(
    desired: int,
    current_replicas: int,
    now: float,
    recommendations: Sequence[Recommendation],
    behavior: Behavior,
) -> tuple[int, list[Recommendation]]:
    """Stabilized recommendation and the trimmed recommendation history (``desired`` appended)."""
    up_cutoff = now - behavior.scale_up.stabilization_window_seconds
    down_cutoff = now - behavior.scale_down.stabilization_window_seconds
    up_rec = desired
    down_rec = desired
    for at, rec in recommendations:
        if at > up_cutoff:
            up_rec = min(up_rec, rec)
        if at > down_cutoff:
            down_rec = max(down_rec, rec)
    result = max(current_replicas, up_rec)
    result = min(result, down_rec)
    keep_after = now - behavior.longest_window_seconds()
    history = [(at, rec) for at, rec in recommendations if at > keep_after]
    history.append((now, desired))
    return result, history


def _change_in_period(events: Sequence[ScaleEvent], now: float, period: int, up: bool) -> int:
    cutoff = now - period
    total = 0
    for at, change in events:
        if at > cutoff and (change > 0) == up and change != 0:
            total += abs(change)
    return total


def _scale_up_limit(current: int, events: Sequence[ScaleEvent], now: float, rules: ScalingRules) -> int:
    if rules.select_policy == "Disabled":
        return current
    results: list[int] = []
    for policy in rules.policies:
        added = _change_in_period(events, now, policy.period_seconds, up=True)
        removed = _change_in_period(events, now, policy.period_seconds, up=False)
        start = current - added + removed
        if policy.type == "Pods":
            results.append(start + policy.value)
        else:
            results.append(math.ceil(start * (1 + policy.value / 100.0)))
    if not results:
        return 2**31 - 1
    return min(results) if rules.select_policy == "Min" else max(results)


def _scale_down_limit(current: int, events: Sequence[ScaleEvent], now: float, rules: ScalingRules) -> int:
    if rules.select_policy == "Disabled":
        return current
    results: list[int] = []
    for policy in rules.policies:
        added = _change_in_period(events, now, policy.period_seconds, up=True)
        removed = _change_in_period(events, now, policy.period_seconds, up=False)
        start = current - added + removed
        if policy.type == "Pods":
            results.append(start - policy.value)
        else:
            results.append(int(start * (1 - policy.value / 100.0)))
    if not results:
        return 0
    # Max: the largest change, i.e. the lowest replica count.
    return max(results) if rules.select_policy == "Min" else min(results)


@dataclass(frozen=True)
class RateLimited:
    replicas: int
    limited: bool
    reason: str


def rate_limit(
    desired: int,
    current_replicas: int,
    now: float,
    events: Sequence[ScaleEvent],
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
) -> RateLimited:
    """Apply the scale-up / scale-down rate limits and the replica bounds to ``desired``."""
    if desired > current_replicas:
        limit = _scale_up_limit(current_replicas, events, now, behavior.scale_up)
        if current_replicas == 0 and behavior.scale_up.select_policy != "Disabled":
            limit = max(limit, 1)  # percent policies cannot leave zero otherwise
        limit = max(limit, current_replicas)
        allowed = min(max_replicas, limit)
        if desired > allowed:
            reason = "scale-up rate limit" if allowed == limit and limit < max_replicas else "max_replicas"
            return RateLimited(allowed, True, reason)
    elif desired < current_replicas:
        limit = _scale_down_limit(current_replicas, events, now, behavior.scale_down)
        limit = min(limit, current_replicas)
        allowed = max(min_replicas, limit)
        if desired < allowed:
            reason = "scale-down rate limit" if allowed == limit and limit > min_replicas else "min_replicas"
            return RateLimited(allowed, True, reason)
    bounded = min(max(desired, min_replicas), max_replicas)
    if bounded != desired:
        return RateLimited(bounded, True, "min_replicas" if bounded > desired else "max_replicas")
    return RateLimited(desired, False, "")


def trim_events(events: Sequence[ScaleEvent], now: float, keep_seconds: float) -> list[ScaleEvent]:
    """Drop scale events older than ``keep_seconds`` (the longest rate-limit period)."""
    cutoff = now - keep_seconds
    return [(at, change) for at, change in events if at > cutoff]
