"""Changelog-backed tables, one module per table, each with its key and value types and a help text.

Each module's ``declare(app)`` declares its table on the app it is given; :func:`declare` declares all of them
and returns them as one :class:`Tables` (called once, by the composition root ``pipeline/worker.py``). Table
names are their changelog topics' names: never rename one.

Keys of per-tenant tables are the tenant id (or ``tenant/sub-key``), written from agents consuming topics
keyed by tenant id, so one worker holds all state of a tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.app import ProvisioningApp
from pipeline.compute.budget_alerts import BudgetAlertState
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.scaling.records import Demand, ModelSnapshot, PolicySet, StoredDecision, WorkloadIndex, WorkloadScaling
from pipeline.tenants.logic import TenantStores
from pipeline.tenants.models import AnomalyLog, ProvisioningStatus, QuotaRecord, TenantRecord, UserRecord
from pipeline.typed_table import TypedTable
from pipeline.usage import UsageRecord
from tables import (
    anomalies,
    budget_alerts,
    compute_records,
    model_snapshots,
    processed_events,
    provisioning_status,
    quotas,
    scaling_decisions,
    scaling_demands,
    scaling_index,
    scaling_policies,
    scaling_state,
    tenants,
    usage,
    users,
    utilization,
)
from tables.processed_events import ProcessedEvents
from tables.utilization import RecentUtilization, Utilization


@dataclass(frozen=True)
class Tables:
    """Every table of the worker, declared on one app."""

    anomalies: TypedTable[AnomalyLog]
    budget_alerts: TypedTable[BudgetAlertState]
    compute_records: TypedTable[ComputeRecord]
    model_snapshots: TypedTable[ModelSnapshot]
    processed_events: ProcessedEvents
    provisioning_status: TypedTable[ProvisioningStatus]
    quotas: TypedTable[QuotaRecord]
    scaling_decisions: TypedTable[StoredDecision]
    scaling_demands: TypedTable[Demand]
    scaling_index: TypedTable[WorkloadIndex]
    scaling_policies: TypedTable[PolicySet]
    scaling_state: TypedTable[WorkloadScaling]
    tenants: TypedTable[TenantRecord]
    usage: TypedTable[UsageRecord]
    users: TypedTable[UserRecord]
    utilization: Utilization

    @property
    def stores(self) -> TenantStores:
        """The tables the tenant domain functions (``pipeline/tenants``) read and write."""
        return TenantStores(tenants=self.tenants, quotas=self.quotas, status=self.provisioning_status,
                            users=self.users)

    def recent_utilization(self) -> RecentUtilization:
        return RecentUtilization(self.utilization, self.usage)


def declare(app: ProvisioningApp) -> Tables:
    """Declare every table on ``app`` (once per app: Faust refuses a second table of the same name)."""
    return Tables(
        anomalies=anomalies.declare(app),
        budget_alerts=budget_alerts.declare(app),
        compute_records=compute_records.declare(app),
        model_snapshots=model_snapshots.declare(app),
        processed_events=processed_events.declare(app),
        provisioning_status=provisioning_status.declare(app),
        quotas=quotas.declare(app),
        scaling_decisions=scaling_decisions.declare(app),
        scaling_demands=scaling_demands.declare(app),
        scaling_index=scaling_index.declare(app),
        scaling_policies=scaling_policies.declare(app),
        scaling_state=scaling_state.declare(app),
        tenants=tenants.declare(app),
        usage=usage.declare(app),
        users=users.declare(app),
        utilization=utilization.declare(app),
    )
