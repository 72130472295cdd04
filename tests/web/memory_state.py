"""In-memory ``StateReader`` and ``CommandGateway`` for tests and demos.

Changes go through the real domain functions (``pipeline.tenants.logic``) on dict-backed typed tables, as the
agents would apply them, so the state really changes; every change is also published as a ``LiveUpdate``.
Refusals that the worker would dead-letter (a tenant that already exists...) are kept in ``dead_letters``.

``LiveUpdate.data`` carries, per kind: ``tenant`` a TenantRecord, ``quota`` a QuotaRecord, ``status`` a
ProvisioningStatus, ``usage`` a UsageRecord, ``anomaly`` an AnomalyRecord, ``scaling`` a ScalingCommand (an
anomaly's reaction) or a ScalingDecisionEvent (a scaling request, decided by a real ``ScalingEngine`` whose
Kubernetes calls are answered from ``deployments``), each as ``model_dump(mode="json")``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pipeline.compute.costs import TenantCosts, tenant_costs
from pipeline.compute.lifecycle import ComputeHeld, ComputeRecord, held_by
from pipeline.contract.topics import SCALING_EVENTS
from pipeline.events.models import (
    AuditEvent,
    QuotaExceeded,
    QuotaResource,
    QuotaUpdateRequested,
    ResourceAnomaly,
    ResourceMetrics,
    ScalingRequest,
    TenantCreated,
    TenantDeleted,
    Tier,
    utc_now,
)
from pipeline.outputs import Emit, Refused, derived_id
from pipeline.provisioners.tiers import Quota
from pipeline.scaling.engine import ScalingEngine
from pipeline.scaling.engine_io import EngineConfig, Outcome, Tables
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.records import (
    ApplyReport,
    ModelSnapshot,
    Observation,
    PolicySet,
    StoredDecision,
    WorkloadIndex,
    WorkloadScaling,
)
from pipeline.tenants import logic
from pipeline.tenants.anomaly import handle_anomaly, release_quarantine
from pipeline.tenants.models import (
    AnomalyLog,
    ProvisioningStatus,
    QuotaRecord,
    ResourceState,
    ResourceStatus,
    TenantRecord,
    TenantUsers,
    UserRecord,
)
from pipeline.typed_table import TypedTable
from pipeline.usage import (
    RECENT_WINDOWS,
    TenantUtilization,
    UsageRecord,
    WindowKey,
    WindowStats,
    fold_samples,
    recent_utilization,
)
from web.state import LiveUpdate, Page

logger = logging.getLogger(__name__)


def _tier_quota(tier: Tier) -> Quota:
    from pipeline.tenants.tiers import quota_for_tier

    return quota_for_tier(tier)


UTILIZATION_WINDOW = timedelta(minutes=1)


class MemoryState:
    """Both protocols at once: ``reader`` and ``gateway`` are this object."""

    def __init__(
        self,
        quota_for_tier: Callable[[Tier], Quota] | None = None,
        now: Callable[[], datetime] = utc_now,
        reactions: dict[str, str] | None = None,
    ) -> None:
        self.stores = logic.TenantStores(
            tenants=TypedTable({}, TenantRecord, "tenants"),
            quotas=TypedTable({}, QuotaRecord, "quotas"),
            status=TypedTable({}, ProvisioningStatus, "provisioning_status"),
            users=TypedTable({}, UserRecord, "users"),
        )
        self.usage_table: TypedTable[UsageRecord] = TypedTable({}, UsageRecord, "usage")
        self.windows: dict[WindowKey, WindowStats] = {}
        self.anomaly_table: TypedTable[AnomalyLog] = TypedTable({}, AnomalyLog, "anomalies")
        self.quota_for_tier = quota_for_tier or _tier_quota
        self.now = now
        self.reactions = reactions or {}
        self.audit_log: list[AuditEvent] = []
        self.emitted: list[Emit] = []
        self.dead_letters: list[tuple[str, Refused]] = []
        self.submitted: list[TenantCreated] = []
        self._subscribers: list[asyncio.Queue[LiveUpdate]] = []
        #: The compute records of every tenant (e.g. a compute runtime's ``holding``); None: no compute here.
        self.compute_records: Callable[[], Iterable[ComputeRecord]] | None = None
        #: Compute budget per tenant id (``compute_costs``; absent: no budget).
        self.compute_budgets: dict[str, float] = {}
        self.scaling_engine = ScalingEngine(
            EngineConfig(window_seconds=UTILIZATION_WINDOW.total_seconds(), forecast_enabled=False),
            Tables(policies=TypedTable({}, PolicySet), state=TypedTable({}, WorkloadScaling),
                   decisions=TypedTable({}, StoredDecision), index=TypedTable({}, WorkloadIndex),
                   snapshots=TypedTable({}, ModelSnapshot), tenants=self.stores.tenants, quotas=self.stores.quotas,
                   anomalies=self.anomaly_table),
            wall=now,
        )
        #: (tenant id, workload) -> its Deployment, as the engine's Kubernetes calls find it.
        self.deployments: dict[tuple[str, str], Observation] = {}

    # -- StateReader -------------------------------------------------------------------------------

    async def tenant(self, tenant_id: str) -> TenantRecord | None:
        return self.stores.tenants.get(tenant_id)

    async def tenants(self, offset: int, limit: int, tenant_ids: Sequence[str] | None = None) -> Page:
        records = sorted((t for _, t in self.stores.tenants.items()), key=lambda t: t.tenant_id)
        if tenant_ids is not None:
            wanted = set(tenant_ids)
            records = [t for t in records if t.tenant_id in wanted]
        return Page(items=records[offset : offset + limit], total=len(records), offset=offset, limit=limit)

    async def quota(self, tenant_id: str) -> QuotaRecord | None:
        return self.stores.quotas.get(tenant_id)

    async def provisioning_status(self, tenant_id: str) -> ProvisioningStatus | None:
        return self.stores.status.get(tenant_id)

    async def usage(self, tenant_id: str) -> UsageRecord | None:
        return self.usage_table.get(tenant_id)

    async def users(self, tenant_id: str) -> TenantUsers | None:
        return logic.tenant_users(self.stores.users, tenant_id)

    async def anomalies(self, tenant_id: str) -> AnomalyLog | None:
        return self.anomaly_table.get(tenant_id)

    async def compute_held(self, tenant_id: str) -> ComputeHeld | None:
        return held_by(self.compute_records(), tenant_id) if self.compute_records is not None else None

    async def compute_costs(self, tenant_id: str) -> TenantCosts | None:
        records = self.compute_records() if self.compute_records is not None else ()  # no compute: nothing spent
        return tenant_costs(records, tenant_id, self.now(),
                            budget_usd=self.compute_budgets.get(tenant_id), period="month")

    async def utilization(self, tenant_id: str) -> TenantUtilization | None:
        return recent_utilization(tenant_id, self.usage_table.get(tenant_id), self._stored_window,
                                  UTILIZATION_WINDOW, RECENT_WINDOWS)

    async def updates(self) -> AsyncIterator[LiveUpdate]:
        queue: asyncio.Queue[LiveUpdate] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    # -- CommandGateway ----------------------------------------------------------------------------

    async def submit_tenant(self, event: TenantCreated) -> None:
        self.submitted.append(event)
        self._apply("tenant-created", event.tenant_id, lambda: logic.handle_tenant_created(
            event, self.stores, self.quota_for_tier, self.now()))

    async def set_quota(self, tenant_id: str, quota: Quota, actor: str) -> None:
        def apply() -> list[Emit]:
            logic.set_quota(self.stores, tenant_id, quota, actor, self.now())
            return []

        self._apply("quota-update", tenant_id, apply)

    async def lift_over_quota(self, tenant_id: str, resources: list[QuotaResource], actor: str) -> None:
        event = QuotaUpdateRequested(
            event_id=derived_id("api-lift", tenant_id, self.now().isoformat()), tenant_id=tenant_id,
            occurred_at=self.now(), lift_over_quota=resources, actor=actor,
        )
        self._apply("quota-update", tenant_id, lambda: logic.handle_quota_update(event, self.stores, self.now()))

    async def release_quarantine(self, tenant_id: str, resource_id: str, actor: str) -> None:
        event = QuotaUpdateRequested(
            event_id=derived_id("api-release", tenant_id, resource_id, self.now().isoformat()), tenant_id=tenant_id,
            occurred_at=self.now(), release_quarantine=resource_id, actor=actor,
        )
        self._apply("quarantine-release", tenant_id,
                    lambda: release_quarantine(event, self.stores, self.anomaly_table, self.now()))

    async def delete_tenant(self, tenant_id: str, purge: bool, actor: str) -> None:
        event = TenantDeleted(
            event_id=derived_id("api-delete", tenant_id, self.now().isoformat()),
            tenant_id=tenant_id,
            occurred_at=self.now(),
            purge=purge,
        )
        self._apply("tenant-deleted", tenant_id, lambda: logic.handle_tenant_deleted(event, self.stores, self.now()))

    async def audit(self, record: AuditEvent) -> None:
        self.audit_log.append(record)

    # -- what other agents would do, for tests and demos -------------------------------------------

    def record_usage(self, sample: ResourceMetrics) -> None:
        folded = fold_samples([sample], self.usage_table.get(sample.tenant_id), self._stored_window,
                              UTILIZATION_WINDOW)
        if folded.usage is not None:
            self.usage_table.put(sample.tenant_id, folded.usage)
        self.windows.update(folded.windows)
        self._publish_tenant(sample.tenant_id, "usage")

    def _stored_window(self, key: str, start: datetime) -> WindowStats | None:
        return self.windows.get((key, start))

    def record_anomaly(self, event: ResourceAnomaly) -> None:
        emits = self._apply(
            "anomaly", event.tenant_id,
            lambda: handle_anomaly(event, self.stores, self.anomaly_table, self.reactions, self.now()),
        )
        log = self.anomaly_table.get(event.tenant_id)
        if log is not None and log.recent:
            self.publish(LiveUpdate("anomaly", event.tenant_id, log.recent[0].model_dump(mode="json")))
        self._publish_scaling(emits)

    def add_deployment(self, tenant_id: str, workload: str, replicas: int, cpu: float = 1.0, gpus: float = 0.0) -> None:
        self.deployments[(tenant_id, workload)] = Observation(
            exists=True, replicas=replicas, cpu_per_replica=cpu, memory_gib_per_replica=1.0, gpus_per_replica=gpus,
            observed_at=self.now())

    def request_scaling(self, event: ScalingRequest) -> None:
        def apply() -> list[Emit]:
            outcome = self.scaling_engine.on_request(event)
            emits: list[Emit] = []
            while outcome:  # the Kubernetes calls answered at once, their reports fed back as the worker does
                emits += outcome.emits
                reports = [self._kubernetes(request) for request in outcome.applies]
                outcome = Outcome()
                for report in reports:
                    outcome.extend(self.scaling_engine.on_applied(report))
            return emits

        self._publish_scaling(self._apply("scaling", event.tenant_id, apply))

    def _kubernetes(self, request: ApplyRequest) -> ApplyReport:
        key = (request.tenant_id, request.workload)
        found = self.deployments.get(key)
        if found is None:
            return ApplyReport(tenant_id=request.tenant_id, workload=request.workload,
                               requested_replicas=request.replicas,
                               observation=Observation(exists=False, observed_at=self.now()), reported_at=self.now())
        previous = found.replicas
        if request.replicas is not None:
            found = self.deployments[key] = found.model_copy(update={"replicas": request.replicas})
        return ApplyReport(tenant_id=request.tenant_id, workload=request.workload, requested_replicas=request.replicas,
                           scaled=request.replicas is not None and request.replicas != previous,
                           previous_replicas=previous, observation=found, reported_at=self.now())

    def quota_exceeded(self, event: QuotaExceeded) -> None:
        self._apply("quota-exceeded", event.tenant_id,
                    lambda: logic.handle_quota_exceeded(event, self.stores, self.now()))

    def set_resource_status(
        self, tenant_id: str, resource: str, state: ResourceState, error: str | None = None
    ) -> None:
        """What the provisioning executor reports back: a resource moved to ``state``."""
        status = self.stores.status.get(tenant_id) or ProvisioningStatus(tenant_id=tenant_id)
        previous = status.resources.get(resource)
        status.resources[resource] = ResourceStatus(
            resource=resource,
            status=state,
            command_id=previous.command_id if previous else derived_id(tenant_id, resource),
            updated_at=self.now(),
            attempts=(previous.attempts + 1) if previous else 1,
            last_error=error,
        )
        self.stores.status.put(tenant_id, status)
        self._publish_tenant(tenant_id, "status")

    # -- plumbing ----------------------------------------------------------------------------------

    def publish(self, update: LiveUpdate) -> None:
        for queue in list(self._subscribers):
            queue.put_nowait(update)

    def _apply(self, what: str, tenant_id: str, handle: Callable[[], list[Emit]]) -> list[Emit]:
        try:
            emits = handle()
        except Refused as refused:
            logger.info("refused %s for %s: %s", what, tenant_id, refused.detail)
            self.dead_letters.append((what, refused))
            return []
        self.emitted.extend(emits)
        self._publish_tenant(tenant_id, "tenant", "quota", "status")
        return emits

    def _publish_tenant(self, tenant_id: str, *kinds: str) -> None:
        records: dict[str, Any] = {
            "tenant": self.stores.tenants.get(tenant_id),
            "quota": self.stores.quotas.get(tenant_id),
            "status": self.stores.status.get(tenant_id),
            "usage": self.usage_table.get(tenant_id),
        }
        for kind in kinds:
            record = records[kind]
            if record is not None:
                self.publish(LiveUpdate(kind, tenant_id, record.model_dump(mode="json")))

    def _publish_scaling(self, emits: list[Emit]) -> None:
        for emit in emits:
            if emit.topic == SCALING_EVENTS:
                self.publish(LiveUpdate("scaling", emit.key, emit.value.model_dump(mode="json")))
