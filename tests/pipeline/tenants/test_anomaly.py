"""Anomaly reactions: a critical anomaly quarantines its workload until a platform admin releases it."""

from __future__ import annotations

from pipeline.contract.topics import PROVISIONING_EVENTS
from pipeline.events.models import QuotaUpdateRequested, ResourceAnomaly, Severity
from pipeline.tenants.anomaly import handle_anomaly, release_quarantine
from pipeline.tenants.logic import TenantStores, handle_tenant_created
from pipeline.tenants.models import AnomalyLog
from pipeline.typed_table import TypedTable
from tests.pipeline.tenants.conftest import NOW, quota_for_tier, tenant_created


def anomaly(event_id: str, workload: str, severity: Severity = Severity.CRITICAL) -> ResourceAnomaly:
    return ResourceAnomaly(event_id=event_id, tenant_id="acme", occurred_at=NOW, resource_type="deployment",
                           resource_id=workload, anomaly_type="egress-spike", severity=severity, value=9.0)


def release(event_id: str, workload: str) -> QuotaUpdateRequested:
    return QuotaUpdateRequested(event_id=event_id, tenant_id="acme", occurred_at=NOW, actor="root",
                                release_quarantine=workload)


def test_a_release_ends_the_quarantine_of_that_workload_only_and_is_announced(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    log: TypedTable[AnomalyLog] = TypedTable({}, AnomalyLog)
    for event_id, workload in (("a1", "api"), ("a2", "etl"), ("a3", "api")):
        handle_anomaly(anomaly(event_id, workload), stores, log, {}, NOW)
    record = log.get("acme")
    assert record is not None and record.quarantined == ["api", "etl"]  # a workload is quarantined once

    [emit] = release_quarantine(release("r1", "api"), stores, log, NOW)
    record = log.get("acme")
    assert record is not None and record.quarantined == ["etl"] and len(record.recent) == 3
    assert emit.topic == PROVISIONING_EVENTS
    event = emit.value
    assert event.kind == "anomaly-reaction" and event.status == "released" and event.resource == "api"
    assert event.previous_status == "quarantine" and event.detail == {"released_by": "admin", "actor": "root"}
    # released already (a redelivery) or never quarantined: nothing changes, nothing is announced
    assert release_quarantine(release("r1", "api"), stores, log, NOW) == []
    assert release_quarantine(release("r2", "web"), stores, log, NOW) == []
    assert log.get("acme") == record

    handle_anomaly(anomaly("a4", "api"), stores, log, {}, NOW)  # a new critical anomaly quarantines it again
    again = log.get("acme")
    assert again is not None and again.quarantined == ["etl", "api"]
