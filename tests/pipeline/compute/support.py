"""A worker's compute runtime without Faust: dict-backed table, senders that apply like the agents do, and
the STAND-IN engine in-process (shared by tests/pipeline/compute/test_runtime.py and tests/web/test_compute.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devstack.derivatives_standin import RunningStandin, running_standin
from pipeline.compute.catalog import Offer
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.factory import build_runtime
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.record_store import apply_record
from pipeline.compute.runtime import ComputeRuntime
from pipeline.config import Settings
from pipeline.events.models import ProvisioningStatusEvent
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.models import QuotaRecord
from pipeline.typed_table import TypedTable

FAST_SETTINGS: dict[str, Any] = {
    "compute_max_attempts": 4,
    "compute_deadline_seconds": 30,
    "compute_poll_interval_seconds": 0.01,
    "compute_provision_wait_seconds": 10,
    "compute_budget_period": "total",
}

#: A quota no single request can exceed (the request model's own bounds) nor a test's few requests together.
UNLIMITED = Quota(cpu_cores=1e9, memory_gib=10**9, gpus=10**6, storage_gib=10**9)


@dataclass
class RuntimeEnv:
    standin: RunningStandin
    runtime: ComputeRuntime
    table: TypedTable[ComputeRecord]
    written: list[ComputeRecord]
    events: list[ProvisioningStatusEvent]
    quotas: dict[str, int | None]
    clock: list[datetime] = field(default_factory=list)


@contextlib.asynccontextmanager
async def runtime_env(
    offers: list[Offer],
    *,
    quotas: dict[str, int | None] | None = None,
    quota_gpus: Callable[[str], int | None] | None = None,
    quota_records: Callable[[str], QuotaRecord | None] | None = None,
    capacity: int = 2,
    clock: datetime | None = None,
    **settings: Any,
) -> AsyncIterator[RuntimeEnv]:
    """A runtime over ``offers`` with the stand-in quoting the same offers; ``clock`` freezes time.

    ``quota_records`` feeds the quota admission; by default every tenant's quota is as large as a request
    can be, so only the optimizer's GPU cap (``quotas``/``quota_gpus``) limits it."""
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord, "compute-records")
    written: list[ComputeRecord] = []
    events: list[ProvisioningStatusEvent] = []
    quota_map: dict[str, int | None] = dict(quotas or {})
    now = [clock or datetime.now(UTC)]
    holder: list[ComputeRuntime] = []

    async def send_record(record: ComputeRecord) -> None:  # what the compute-records agent does
        written.append(record)
        apply_record(table, record)
        holder[0].store.applied(record)

    async def send_status(event: ProvisioningStatusEvent) -> None:
        events.append(event)

    async with running_standin(offers, default_capacity=capacity) as standin:
        engine = DerivativesEngineClient(standin.url, allocate_timeout_s=0.3)
        runtime = build_runtime(
            Settings(**{**FAST_SETTINGS, **settings}),
            table=table, send_record=send_record, send_status=send_status,
            quota_gpus=quota_gpus or (lambda tenant_id: quota_map.get(tenant_id)),
            quotas=quota_records or (lambda tenant_id: QuotaRecord(tenant_id=tenant_id, limits=UNLIMITED,
                                                                   updated_at=now[0], updated_by="test")),
            engine=engine, offers=offers,
            clock=(lambda: now[0]) if clock is not None else (lambda: datetime.now(UTC)),
        )
        holder.append(runtime)
        assert await runtime.refresh_offers() == len(offers)
        try:
            yield RuntimeEnv(standin, runtime, table, written, events, quota_map, now)
        finally:
            await runtime.close()
