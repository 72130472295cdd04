"""Resource usage per tenant and workload: the latest sample and tumbling-window aggregates."""

from __future__ import annotations

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
    """Aggregates of the samples of one workload in one tumbling window."""

    count: int = 0
    cpu_sum: float = 0.0
    cpu_max: float = 0.0
    memory_sum: float = 0.0
    memory_max: float = 0.0
    gpus_sum: float = 0.0
    gpus_max: float = 0.0
    requests_sum: float = 0.0
    replicas_last: int | None = None

    def add(self, sample: ResourceMetrics) -> WindowStats:
        return WindowStats(
            count=self.count + 1,
            cpu_sum=self.cpu_sum + sample.cpu_cores,
            cpu_max=max(self.cpu_max, sample.cpu_cores),
            memory_sum=self.memory_sum + sample.memory_gib,
            memory_max=max(self.memory_max, sample.memory_gib),
            gpus_sum=self.gpus_sum + sample.gpus,
            gpus_max=max(self.gpus_max, sample.gpus),
            requests_sum=self.requests_sum + (sample.requests_per_s or 0.0),
            replicas_last=sample.replicas if sample.replicas is not None else self.replicas_last,
        )

    @property
    def cpu_mean(self) -> float:
        return self.cpu_sum / self.count if self.count else 0.0


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
