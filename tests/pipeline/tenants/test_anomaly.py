"""Anomaly reactions: a critical anomaly quarantines its workload until a platform admin releases it."""

from __future__ import annotations

from pipeline.contract.topics import PROVISIONING_COMMANDS, PROVISIONING_EVENTS
from pipeline.events.models import CommandAction, ProvisioningCommand, QuotaUpdateRequested, ResourceAnomaly, Severity
from pipeline.tenants.anomaly import handle_anomaly, release_quarantine, workload_fence
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

    command, emit = release_quarantine(release("r1", "api"), stores, log, NOW)
    record = log.get("acme")
    assert record is not None and record.quarantined == ["etl"] and len(record.recent) == 3
    assert command.topic == PROVISIONING_COMMANDS
    assert (command.value.action, command.value.resource) == (CommandAction.RELEASE_QUARANTINE, "kubernetes")
    assert command.value.spec["workload"] == "api"
    assert emit.topic == PROVISIONING_EVENTS
    event = emit.value
    assert event.kind == "anomaly-reaction" and event.status == "released" and event.resource == "api"
    assert event.previous_status == "quarantine" and event.detail == {"released_by": "admin", "actor": "root"}
    # Released already (a redelivery, whose send may have been lost): nothing changes, nothing is announced,
    # the same command (same id) goes out again; the executor's fence decides whether it still runs.
    assert release_quarantine(release("r1", "api"), stores, log, NOW) == [command]
    assert [e.topic for e in release_quarantine(release("r2", "web"), stores, log, NOW)] == [PROVISIONING_COMMANDS]
    assert log.get("acme") == record

    handle_anomaly(anomaly("a4", "api"), stores, log, {}, NOW)  # a new critical anomaly quarantines it again
    again = log.get("acme")
    assert again is not None and again.quarantined == ["etl", "api"]


def _commands(emits: list[object]) -> list[ProvisioningCommand]:
    return [e.value for e in emits if e.topic == PROVISIONING_COMMANDS]  # type: ignore[attr-defined]


def test_a_quarantine_is_recorded_and_sends_an_isolation_command_each_time(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    log: TypedTable[AnomalyLog] = TypedTable({}, AnomalyLog)
    [command] = _commands(handle_anomaly(anomaly("a1", "api"), stores, log, {}, NOW))
    record = log.get("acme")
    assert record is not None and record.quarantined == ["api"]  # recorded in the same handling as the send
    assert (command.resource, command.action, command.spec["workload"]) == ("kubernetes", CommandAction.QUARANTINE,
                                                                          "api")
    assert command.spec["tier"] == "standard" and command.cause_event_id == "a1"
    # a redelivery sends the same command; a later anomaly of the same workload a new one (re-applies isolation)
    assert _commands(handle_anomaly(anomaly("a1", "api"), stores, log, {}, NOW)) == [command]
    [later] = _commands(handle_anomaly(anomaly("a2", "api"), stores, log, {}, NOW))
    assert later.command_id != command.command_id
    # reactions other than quarantine send no provisioning command
    assert _commands(handle_anomaly(anomaly("a3", "etl", Severity.HIGH), stores, log, {}, NOW)) == []
    assert _commands(handle_anomaly(anomaly("a4", "etl", Severity.LOW), stores, log, {}, NOW)) == []


def test_the_fence_drops_a_quarantine_released_since_and_a_release_quarantined_again(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    log: TypedTable[AnomalyLog] = TypedTable({}, AnomalyLog)
    [quarantine] = _commands(handle_anomaly(anomaly("a1", "api"), stores, log, {}, NOW))
    assert workload_fence(quarantine, log.get("acme")) is None
    [lift] = _commands(release_quarantine(release("r1", "api"), stores, log, NOW))
    assert workload_fence(lift, log.get("acme")) is None
    assert workload_fence(quarantine, log.get("acme")) == "the workload was released since"
    assert workload_fence(quarantine, None) == "the workload was released since"
    handle_anomaly(anomaly("a2", "api"), stores, log, {}, NOW)
    assert workload_fence(lift, log.get("acme")) == "the workload was quarantined again since"
    create = quarantine.model_copy(update={"action": CommandAction.CREATE})
    assert workload_fence(create, log.get("acme")) is None  # other actions are not this fence's business


def test_a_workload_quarantined_under_the_longest_resource_id_can_be_released(stores: TenantStores) -> None:
    handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
    log: TypedTable[AnomalyLog] = TypedTable({}, AnomalyLog)
    longest = "w" * 256
    handle_anomaly(anomaly("a1", longest), stores, log, {}, NOW)
    record = log.get("acme")
    assert record is not None and record.quarantined == [longest]
    release_quarantine(release("r1", longest), stores, log, NOW)
    record = log.get("acme")
    assert record is not None and record.quarantined == []
