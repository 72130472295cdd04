"""Scaling requests as one more trigger of the engine: their pure parts.

A ``scaling-request-events`` event asks for a replica count (``desired_replicas``) or a change (``delta``). The
engine (:meth:`pipeline.scaling.engine.ScalingEngine.on_request`) reads the Deployment first, then decides with
:func:`pipeline.scaling.decide.decide`, the request taking the place of the policies' combined value: the
policies' bounds, the budgets, the tenant's quota (:func:`quota_room`) and the fair-share grant still cap it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.events.models import MAX_REQUESTED_REPLICAS
from pipeline.scaling.fairshare import RESOURCES, ResourceVector

#: Float slack when comparing sums of requests with a limit (0.1 + 0.2 cores fit in a 0.3 quota).
_EPSILON = 1e-9


@dataclass(frozen=True)
class RequestInput:
    """The request a decision is made for (``DecisionInputs.request``)."""

    event_id: str
    target: int
    """The replica count asked for (a delta already resolved against the current count)."""
    asked: str
    reason: str = ""


@dataclass(frozen=True)
class QuotaRoom:
    """Most replicas of the workload that the tenant's quota leaves room for, and why (``DecisionInputs.quota``).

    It caps scale-ups only: a workload already above it is held where it is, never scaled down by it."""

    replicas: int
    detail: str


def resolve_target(desired_replicas: int | None, delta: int | None, current: int) -> tuple[int, str]:
    """The absolute count a request asks for, within ``0..MAX_REQUESTED_REPLICAS``, and how it was asked."""
    if desired_replicas is not None:
        return max(0, min(desired_replicas, MAX_REQUESTED_REPLICAS)), f"desired_replicas {desired_replicas}"
    step = delta or 0
    target = max(0, min(current + step, MAX_REQUESTED_REPLICAS))
    return target, f"delta {step:+d} from {current}"


def quota_room(per_replica: ResourceVector, limits: ResourceVector, others: ResourceVector) -> QuotaRoom | None:
    """How many replicas of ``per_replica`` fit in ``limits`` next to what ``others`` (the tenant's other
    workloads) already request; None when one replica requests nothing the quota limits.

    The tightest resource sets it; a resource already over its limit leaves room for none."""
    best: tuple[int, str] | None = None
    for name, each, limit, used in zip(RESOURCES, per_replica.as_tuple(), limits.as_tuple(), others.as_tuple(),
                                       strict=True):
        if each <= 0 or not math.isfinite(each):
            continue
        # A tiny request per replica makes the ratio huge (or infinite): no request asks for more than the cap.
        ratio = (limit - used + _EPSILON) / each
        fit = math.floor(max(0.0, min(ratio, MAX_REQUESTED_REPLICAS)))
        if best is None or fit < best[0]:
            detail = (f"at most {fit} replicas fit in the {name} quota ({limit:g}, of which the tenant's other "
                      f"workloads request {used:g}; one replica requests {each:g})")
            best = (fit, detail)
    if best is None:
        return None
    return QuotaRoom(replicas=best[0], detail=best[1])
