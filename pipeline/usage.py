"""Resource usage per tenant and workload: the latest sample and tumbling-window aggregates.

:func:`fold_samples` folds a batch of samples of one tenant into both at once, so that a batch costs one
table write per tenant and per workload window, however many samples it holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, Field

from pipeline.events.models import ResourceMetrics


class WorkloadSample(BaseModel):
    cpu_cores: float
    memory_gib: float
    gpus: float
    requests_per_s: float | None = None
    replicas: int | None = None
    at: AwareDatetime


class UsageRecord(BaseModel):
    """The latest sample of every workload of a tenant, and their sum."""

    tenant_id: str
    workloads: dict[str, WorkloadSample] = Field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        return {
            "cpu_cores": sum(w.cpu_cores for w in self.workloads.values()),
            "memory_gib": sum(w.memory_gib for w in self.workloads.values()),
            "gpus": sum(w.gpus for w in self.workloads.values()),
        }


class WindowStats(BaseModel):
    """Aggregates of the samples of one workload in one tumbling window (by the samples' ``occurred_at``),
    and the ids of the events counted: a redelivered sample falls in the same window and is seen there."""

    count: int = 0
    cpu_sum: float = 0.0
    cpu_max: float = 0.0
    memory_sum: float = 0.0
    memory_max: float = 0.0
    gpus_sum: float = 0.0
    gpus_max: float = 0.0
    requests_sum: float = 0.0
    replicas_last: int | None = None
    event_ids: list[str] = Field(default_factory=list)

    def add(self, sample: ResourceMetrics) -> None:
        self.event_ids.append(sample.event_id)
        self.count += 1
        self.cpu_sum += sample.cpu_cores
        self.cpu_max = max(self.cpu_max, sample.cpu_cores)
        self.memory_sum += sample.memory_gib
        self.memory_max = max(self.memory_max, sample.memory_gib)
        self.gpus_sum += sample.gpus
        self.gpus_max = max(self.gpus_max, sample.gpus)
        self.requests_sum += sample.requests_per_s or 0.0
        if sample.replicas is not None:
            self.replicas_last = sample.replicas


def workload_key(tenant_id: str, workload: str) -> str:
    return f"{tenant_id}/{workload}"


def record_sample(usage: UsageRecord | None, sample: ResourceMetrics) -> UsageRecord:
    usage = usage or UsageRecord(tenant_id=sample.tenant_id)
    current = usage.workloads.get(sample.workload)
    if current is None or current.at <= sample.occurred_at:
        usage.workloads[sample.workload] = WorkloadSample(
            cpu_cores=sample.cpu_cores,
            memory_gib=sample.memory_gib,
            gpus=sample.gpus,
            requests_per_s=sample.requests_per_s,
            replicas=sample.replicas,
            at=sample.occurred_at,
        )
    return usage


def window_start(at: datetime, size: timedelta) -> datetime:
    """Start of the tumbling window of length ``size`` (aligned on the epoch) that holds ``at``."""
    seconds = size.total_seconds()
    return datetime.fromtimestamp(math.floor(at.timestamp() / seconds) * seconds, UTC)


WindowKey = tuple[str, datetime]  # (workload key, window start)
#: How many of the most recent windows of each workload the API shows.
RECENT_WINDOWS = 15


@dataclass
class FoldedSamples:
    """What a batch of one tenant's samples changes: the tables to write, the samples that were new."""

    usage: UsageRecord | None = None
    windows: dict[WindowKey, WindowStats] = field(default_factory=dict)
    fresh: list[ResourceMetrics] = field(default_factory=list)
    duplicates: int = 0


def fold_samples(
    samples: Sequence[ResourceMetrics],
    usage: UsageRecord | None,
    stored_window: Callable[[str, datetime], WindowStats | None],
    size: timedelta,
) -> FoldedSamples:
    """Fold one tenant's samples (in arrival order) into its usage record and the workload windows.

    ``stored_window(key, start)`` reads a window as stored before this batch. A sample whose event id its
    window already counts is a duplicate (a redelivery): it changes nothing and is not in ``fresh``.
    """
    folded = FoldedSamples()
    windows: dict[WindowKey, WindowStats] = {}
    latest: dict[str, ResourceMetrics] = {}
    for sample in samples:
        key = (workload_key(sample.tenant_id, sample.workload), window_start(sample.occurred_at, size))
        stats = windows.get(key)
        if stats is None:
            stored = stored_window(*key)
            stats = windows[key] = stored.model_copy(deep=True) if stored is not None else WindowStats()
        if sample.event_id in stats.event_ids:
            folded.duplicates += 1
            continue
        stats.add(sample)
        folded.windows[key] = stats
        folded.fresh.append(sample)
        newest = latest.get(sample.workload)
        if newest is None or newest.occurred_at <= sample.occurred_at:
            latest[sample.workload] = sample
    for sample in latest.values():
        usage = record_sample(usage, sample)
    folded.usage = usage if latest else None
    return folded


class WindowSummary(BaseModel):
    """One utilization window of a workload, as the API shows it."""

    start: AwareDatetime
    end: AwareDatetime
    samples: int
    cpu_cores_mean: float
    cpu_cores_max: float
    memory_gib_mean: float
    memory_gib_max: float
    gpus_mean: float
    gpus_max: float
    requests_per_s_mean: float
    replicas_last: int | None

    @classmethod
    def of(cls, start: datetime, size: timedelta, stats: WindowStats) -> WindowSummary:
        n = stats.count or 1
        return cls(
            start=start, end=start + size, samples=stats.count,
            cpu_cores_mean=stats.cpu_sum / n, cpu_cores_max=stats.cpu_max,
            memory_gib_mean=stats.memory_sum / n, memory_gib_max=stats.memory_max,
            gpus_mean=stats.gpus_sum / n, gpus_max=stats.gpus_max,
            requests_per_s_mean=stats.requests_sum / n, replicas_last=stats.replicas_last,
        )


class TenantUtilization(BaseModel):
    """The most recent utilization windows of every workload of a tenant (oldest first), up to the window of
    each workload's latest sample; windows without samples are left out."""

    tenant_id: str
    window_seconds: float
    workloads: dict[str, list[WindowSummary]] = Field(default_factory=dict)


def recent_utilization(
    tenant_id: str,
    usage: UsageRecord | None,
    stored_window: Callable[[str, datetime], WindowStats | None],
    size: timedelta,
    windows: int,
) -> TenantUtilization:
    """Read back the last ``windows`` windows of each workload the usage record knows."""
    result = TenantUtilization(tenant_id=tenant_id, window_seconds=size.total_seconds())
    for workload, latest in sorted((usage.workloads if usage else {}).items()):
        key, last = workload_key(tenant_id, workload), window_start(latest.at, size)
        starts = [last - size * back for back in range(windows - 1, -1, -1)]
        found = [(start, stored_window(key, start)) for start in starts]
        result.workloads[workload] = [WindowSummary.of(start, size, stats) for start, stats in found if stats]
    return result
