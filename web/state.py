"""What the web layer needs from the worker: reading state and submitting changes.

The web layer never writes tables: it reads them through ``StateReader`` and submits changes through
``CommandGateway`` (which sends to a topic that an agent consumes, or calls the same functions the agents
call). The worker provides Faust-backed implementations (``web/faust_state.py``); tests use the in-memory
ones in ``tests/web/memory_state.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.compute.costs import TenantCosts
from pipeline.compute.lifecycle import ComputeHeld
from pipeline.events.models import AuditEvent, QuotaResource, TenantCreated
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.models import AnomalyLog, ProvisioningStatus, QuotaRecord, TenantRecord, TenantUsers
from pipeline.usage import TenantUtilization, UsageRecord


@dataclass(frozen=True)
class Page:
    items: Sequence[TenantRecord]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class LiveUpdate:
    """A change the dashboard shows: ``kind`` is tenant / quota / status / usage / anomaly / scaling / compute, or
    compute-records (a compute record of the tenant changed: its row's usage may have)."""

    kind: str
    tenant_id: str
    data: dict[str, Any]


class StateReader(Protocol):
    async def tenant(self, tenant_id: str) -> TenantRecord | None: ...
    async def tenants(self, offset: int, limit: int, tenant_ids: Sequence[str] | None = None) -> Page: ...
    async def quota(self, tenant_id: str) -> QuotaRecord | None: ...
    async def provisioning_status(self, tenant_id: str) -> ProvisioningStatus | None: ...
    async def usage(self, tenant_id: str) -> UsageRecord | None: ...
    async def users(self, tenant_id: str) -> TenantUsers | None:
        """The tenant's users not yet deleted (``pipeline.tenants.logic.tenant_users``), from its owner."""
        ...
    async def utilization(self, tenant_id: str) -> TenantUtilization | None: ...
    async def anomalies(self, tenant_id: str) -> AnomalyLog | None: ...
    async def compute_held(self, tenant_id: str) -> ComputeHeld | None:
        """What the tenant's compute allocations hold now (None: no compute state on this worker)."""
        ...
    async def compute_costs(self, tenant_id: str) -> TenantCosts | None:
        """The tenant's compute spend, commitments and forecast against its budget (None: no compute state)."""
        ...
    def updates(self) -> AsyncIterator[LiveUpdate]:
        """Changes as they happen on this worker, for server-sent events."""
        ...


class CommandGateway(Protocol):
    async def submit_tenant(self, event: TenantCreated) -> None:
        """Provision a tenant exactly as the tenant-created event would (sends that event)."""

    async def set_quota(self, tenant_id: str, quota: Quota, actor: str) -> None:
        """Ask the owner of the tenant to replace its quota (quota table and Kubernetes ResourceQuota)."""

    async def lift_over_quota(self, tenant_id: str, resources: list[QuotaResource], actor: str) -> None:
        """Ask the owner of the tenant to lift its over-quota marks of ``resources`` (the quota stays)."""

    async def release_quarantine(self, tenant_id: str, resource_id: str, actor: str) -> None:
        """Ask the owner of the tenant to release its quarantined workload ``resource_id``."""

    async def delete_tenant(self, tenant_id: str, purge: bool, actor: str) -> None: ...

    async def audit(self, record: AuditEvent) -> None:
        """Append to the audit stream (audit-events)."""
