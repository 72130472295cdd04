"""The engine's tumbling windows of event time: the open one of each workload (in memory), the closed ones
waiting for their forecasts, and what a batch of samples made of them (:class:`Accumulated`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline.events.models import ResourceMetrics
from pipeline.scaling.engine_io import Outcome
from pipeline.scaling.policies import Policy
from pipeline.usage import workload_key


class OpenWindow:
    """The open window of one workload (in memory)."""

    __slots__ = ("count", "cpu_sum", "replicas", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.cpu_sum = 0.0
        self.replicas: int | None = None

    def add(self, sample: ResourceMetrics) -> None:
        self.count += 1
        self.cpu_sum += sample.cpu_cores
        if sample.replicas is not None:
            self.replicas = sample.replicas


@dataclass
class ClosedWindow:
    """A window the engine closed, waiting for its forecast (:meth:`ScalingEngine.finish`)."""

    tenant_id: str
    workload: str
    end: datetime
    demand: float
    replicas: int | None
    policies: list[Policy]
    """The workload's policies when it closed (they choose the forecast's band)."""
    generation: int

    @property
    def key(self) -> str:
        return workload_key(self.tenant_id, self.workload)


@dataclass
class Accumulated:
    """What :meth:`ScalingEngine.accumulate` made of some samples."""

    outcome: Outcome = field(default_factory=Outcome)
    """Deployments to observe (a workload's first sample in this process)."""
    closed: list[ClosedWindow] = field(default_factory=list)
