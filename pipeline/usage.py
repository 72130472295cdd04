"""Resource usage per tenant and workload: the latest sample and tumbling-window aggregates.

:func:`fold_samples` folds a batch of samples of one tenant into both at once, so that a batch costs one
table write per tenant and per workload window, however many samples it holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
    records: dict[WindowKey, dict[str, Any]] = field(default_factory=dict)
    """The windows to write, each as the table stores it (``WindowStats.model_dump()``, made without a model:
    a model per window and its dump cost more than the rest of the window's fold)."""
    fresh: list[ResourceMetrics] = field(default_factory=list)
    duplicates: int = 0
    placed: list[tuple[str, float]] = field(default_factory=list)
    """For each sample of ``fresh``: its workload key and the start of its window (epoch seconds), so that
    the scaling engine, whose windows are the same size, need not place it again."""
    window_seconds: float = 0.0
    """The window size ``placed`` was computed with."""

    @property
    def windows(self) -> dict[WindowKey, WindowStats]:
        """The windows to write, as models."""
        return {key: WindowStats.model_validate(record) for key, record in self.records.items()}


class _OpenStats:
    """A window being folded: :class:`WindowStats` as plain attributes (a pydantic model's attribute
    assignment costs about ten times more, and a batch makes ten assignments per sample). Adds exactly as
    :meth:`WindowStats.add` does, in the same order, so the sums are the same floats."""

    __slots__ = ("count", "cpu_max", "cpu_sum", "event_ids", "gpus_max", "gpus_sum", "ids", "memory_max",
                 "memory_sum", "replicas_last", "requests_sum")

    def __init__(self, stored: WindowStats | None) -> None:
        stats = stored if stored is not None else _EMPTY_WINDOW
        self.count = stats.count
        self.cpu_sum, self.cpu_max = stats.cpu_sum, stats.cpu_max
        self.memory_sum, self.memory_max = stats.memory_sum, stats.memory_max
        self.gpus_sum, self.gpus_max = stats.gpus_sum, stats.gpus_max
        self.requests_sum = stats.requests_sum
        self.replicas_last = stats.replicas_last
        self.event_ids = list(stats.event_ids)  # a copy: what was read is not changed in place
        self.ids = set(self.event_ids)

    def add(self, sample: ResourceMetrics) -> None:
        self.event_ids.append(sample.event_id)
        self.ids.add(sample.event_id)
        self.count += 1
        # ``if b > a: a = b`` is what max(a, b) does, without the call.
        cpu, memory, gpus = sample.cpu_cores, sample.memory_gib, sample.gpus
        self.cpu_sum += cpu
        if cpu > self.cpu_max:
            self.cpu_max = cpu
        self.memory_sum += memory
        if memory > self.memory_max:
            self.memory_max = memory
        self.gpus_sum += gpus
        if gpus > self.gpus_max:
            self.gpus_max = gpus
        self.requests_sum += sample.requests_per_s or 0.0
        if sample.replicas is not None:
            self.replicas_last = sample.replicas

    def record(self) -> dict[str, Any]:
        """The window as ``WindowStats.model_dump()`` makes it (same keys, same order)."""
        return {
            "count": self.count, "cpu_sum": self.cpu_sum, "cpu_max": self.cpu_max, "memory_sum": self.memory_sum,
            "memory_max": self.memory_max, "gpus_sum": self.gpus_sum, "gpus_max": self.gpus_max,
            "requests_sum": self.requests_sum, "replicas_last": self.replicas_last, "event_ids": self.event_ids,
        }


_EMPTY_WINDOW = WindowStats()


def fold_samples(
    samples: Sequence[ResourceMetrics],
    usage: UsageRecord | None,
    stored_window: Callable[[str, datetime], WindowStats | None],
    size: timedelta,
) -> FoldedSamples:
    """Fold one tenant's samples (in arrival order) into its usage record and the workload windows.

    ``stored_window(key, start)`` reads a window as stored before this batch (once per window of the batch).
    A sample whose event id its window already counts is a duplicate (a redelivery): it changes nothing and
    is not in ``fresh``. Each sample is placed in its window once; the window starts and workload keys are
    computed once per batch (this runs for every sample the worker takes).
    """
    seconds = size.total_seconds()
    folded = FoldedSamples(window_seconds=seconds)
    fresh, placed = folded.fresh, folded.placed
    opened: dict[tuple[str, float], _OpenStats] = {}
    changed: dict[tuple[str, float], _OpenStats] = {}  # in the order of their first new sample
    starts: dict[float, datetime] = {}
    keys: dict[str, str] = {}
    latest: dict[str, ResourceMetrics] = {}
    floor = math.floor
    for sample in samples:
        workload = sample.workload
        key = keys.get(workload)
        if key is None:
            key = keys[workload] = workload_key(sample.tenant_id, workload)
        # The same arithmetic as window_start, without making a datetime per sample.
        slot = (key, floor(sample.occurred_at.timestamp() / seconds) * seconds)
        stats = opened.get(slot)
        if stats is None:
            start = starts.get(slot[1])
            if start is None:
                start = starts[slot[1]] = datetime.fromtimestamp(slot[1], UTC)
            stats = opened[slot] = _OpenStats(stored_window(key, start))
        if sample.event_id in stats.ids:
            folded.duplicates += 1
            continue
        stats.add(sample)
        if slot not in changed:
            changed[slot] = stats
        fresh.append(sample)
        placed.append(slot)
        newest = latest.get(workload)
        if newest is None or newest.occurred_at <= sample.occurred_at:
            latest[workload] = sample
    folded.records = {(key, starts[start]): stats.record() for (key, start), stats in changed.items()}
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
