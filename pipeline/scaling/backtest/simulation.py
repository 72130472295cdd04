"""Replaying demand against a policy's replica decisions, and scoring the provisioning."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.scaling.decision_models import ScalingState


@dataclass
class PolicyRun:
    name: str
    under_provisioned_fraction: float
    unserved_fraction: float
    replica_hours: float
    scored_steps: int
    replicas: list[int] = field(repr=False, default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, oracle_hours: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "under_provisioned_fraction": round(self.under_provisioned_fraction, 6),
            "unserved_fraction": round(self.unserved_fraction, 6),
            "replica_hours": round(self.replica_hours, 3),
            "scored_steps": self.scored_steps,
        }
        if oracle_hours:
            out["replica_hours_vs_oracle"] = round(self.replica_hours / oracle_hours, 4)
        out.update(self.extra)
        return out


def _score(
    name: str,
    demand: Sequence[float],
    observed: Sequence[bool],
    spec: Sequence[int],
    ready: Sequence[int],
    capacity_per_replica: float,
    score_from: int,
    interval_hours: float,
) -> PolicyRun:
    under = 0
    unserved = 0.0
    total = 0.0
    steps = 0
    hours = 0.0
    for s in range(score_from, len(demand)):
        hours += spec[s] * interval_hours
        if not observed[s]:
            continue
        steps += 1
        capacity = ready[s] * capacity_per_replica
        d = demand[s]
        total += d
        if d > capacity * (1 + 1e-9) + 1e-12:
            under += 1
            unserved += d - capacity
    return PolicyRun(
        name=name,
        under_provisioned_fraction=under / steps if steps else 0.0,
        unserved_fraction=unserved / total if total > 0 else 0.0,
        replica_hours=hours,
        scored_steps=steps,
        replicas=list(spec),
    )


DecideFn = Callable[[int, int, ScalingState | None], tuple[int, ScalingState | None]]


def simulate(
    name: str,
    demand: Sequence[float],
    observed: Sequence[bool],
    decide_step: DecideFn,
    initial_replicas: int,
    boot_steps: int,
    capacity_per_replica: float,
    score_from: int,
    interval_hours: float,
) -> PolicyRun:
    """Run one policy over the series; ``decide_step(t, current, state) -> (desired, state)``."""
    n = len(demand)
    spec = [0] * n
    ready = [0] * n
    replicas = initial_replicas
    booting: list[list[int]] = []  # [first step served, count], oldest first
    state: ScalingState | None = None
    for t in range(n):
        spec[t] = replicas
        ready[t] = replicas - sum(c for s, c in booting if s > t)
        desired, state = decide_step(t, replicas, state)
        if desired > replicas:
            booting.append([t + 1 + boot_steps, desired - replicas])
        elif desired < replicas:
            remove = replicas - desired
            while remove and booting:
                last = booting[-1]
                take = min(remove, last[1])
                last[1] -= take
                remove -= take
                if last[1] == 0:
                    booting.pop()
        replicas = desired
        booting = [b for b in booting if b[0] > t + 1]
    return _score(name, demand, observed, spec, ready, capacity_per_replica, score_from, interval_hours)


def oracle(
    demand: Sequence[float],
    observed: Sequence[bool],
    boot_steps: int,
    capacity_per_replica: float,
    score_from: int,
    interval_hours: float,
) -> PolicyRun:
    """Perfect foresight: exactly ``ceil(demand / capacity)`` ready at every step, each replica
    requested ``boot_steps`` ahead (so it is paid for while booting)."""
    need = [math.ceil(d / capacity_per_replica - 1e-9) for d in demand]
    n = len(need)
    spec = [max(need[s : min(n, s + boot_steps + 1)]) for s in range(n)]
    return _score("oracle", demand, observed, spec, need, capacity_per_replica, score_from, interval_hours)


