"""Resource anomalies: record them and apply the configured reaction (notify, scale or quarantine).

A quarantine is recorded first (the workload joins the log's ``quarantined`` list: the scaling hold and the
compute refusal read it), then a ``quarantine`` command for the ``kubernetes`` resource isolates the workload's
network (``pipeline/provisioners/kubernetes_quarantine.py``) through the executor, with its retries. An admin's
release leaves the list and sends ``release_quarantine``. Each command's id derives from its event, so a
redelivered event sends the same command again (a crash between the table write and the send loses nothing),
and the executor's fence (:func:`workload_fence`) drops a quarantine released since, or a release quarantined
again since.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pipeline.contract.records import ScalingCommand
from pipeline.contract.topics import PROVISIONING_COMMANDS, PROVISIONING_EVENTS, SCALING_EVENTS
from pipeline.events.models import (
    CommandAction,
    ProvisioningCommand,
    ProvisioningStatusEvent,
    QuotaUpdateRequested,
    ResourceAnomaly,
    Severity,
)
from pipeline.outputs import Emit, derived_id
from pipeline.tenants.logic import TenantStores, provisioning_commands, require_tenant
from pipeline.tenants.models import AnomalyLog, AnomalyRecord, TenantRecord
from pipeline.typed_table import TypedTable

RECENT_LIMIT = 50


class Reaction(StrEnum):
    NOTIFY = "notify"
    SCALE = "scale"
    QUARANTINE = "quarantine"


DEFAULT_REACTIONS: dict[Severity, Reaction] = {
    Severity.LOW: Reaction.NOTIFY,
    Severity.MEDIUM: Reaction.NOTIFY,
    Severity.HIGH: Reaction.SCALE,
    Severity.CRITICAL: Reaction.QUARANTINE,
}


def handle_anomaly(
    event: ResourceAnomaly,
    stores: TenantStores,
    anomalies: TypedTable[AnomalyLog],
    reactions: Mapping[str, str],
    now: datetime,
) -> list[Emit]:
    tenant = require_tenant(stores, event.tenant_id)
    reaction = Reaction(reactions.get(event.severity.value, DEFAULT_REACTIONS[event.severity].value))
    log = anomalies.get(event.tenant_id) or AnomalyLog(tenant_id=event.tenant_id)
    log.recent = [
        AnomalyRecord(
            event_id=event.event_id,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            anomaly_type=event.anomaly_type,
            severity=event.severity.value,
            value=event.value,
            reaction=reaction.value,
            occurred_at=event.occurred_at,
        ),
        *log.recent,
    ][:RECENT_LIMIT]
    if reaction is Reaction.QUARANTINE and event.resource_id not in log.quarantined:
        log.quarantined.append(event.resource_id)
    anomalies.put(event.tenant_id, log)
    emits = [
        Emit(
            PROVISIONING_EVENTS,
            event.tenant_id,
            ProvisioningStatusEvent(
                event_id=derived_id(event.event_id, "reaction"),
                tenant_id=event.tenant_id,
                occurred_at=now,
                kind="anomaly-reaction",
                resource=f"{event.resource_type}/{event.resource_id}",
                status=reaction.value,
                detail={"anomaly_type": event.anomaly_type, "severity": event.severity.value, "value": event.value},
            ),
        )
    ]
    if reaction is Reaction.QUARANTINE:
        # Every time, also for a workload already quarantined: a redelivered event must send its command again,
        # and a later critical anomaly re-applies the isolation (labels a pod that escaped it meanwhile).
        emits.append(workload_command(stores, tenant, CommandAction.QUARANTINE, event.event_id,
                                      event.resource_id, now))
    if reaction is Reaction.SCALE:
        emits.append(
            Emit(
                SCALING_EVENTS,
                event.tenant_id,
                ScalingCommand(
                    command_id=derived_id(event.event_id, "scale"),
                    tenant_id=event.tenant_id,
                    workload=event.resource_id,
                    delta=1,
                    desired_replicas=None,
                    reason=f"anomaly {event.anomaly_type} ({event.severity.value})",
                    status="accepted",
                    issued_at=now,
                    cause_event_id=event.event_id,
                ),
            )
        )
    return emits


def release_quarantine(
    event: QuotaUpdateRequested, stores: TenantStores, anomalies: TypedTable[AnomalyLog], now: datetime,
) -> list[Emit]:
    """A platform admin releases a quarantined workload (``event.release_quarantine``): it leaves the log's
    ``quarantined`` list (the scaling hold and the compute refusal go with it), a ``release_quarantine`` command
    ends its network isolation, and the release is announced on ``provisioning-events``. A workload not
    quarantined (a redelivered release) changes nothing but sends the same command again."""
    tenant = require_tenant(stores, event.tenant_id)
    resource_id = event.release_quarantine
    if resource_id is None:
        return []
    # Sent whether or not the workload is still in the list: a redelivered release (its table write done, its
    # send lost) sends its command again; the fence drops it if the workload was quarantined again since.
    command = workload_command(stores, tenant, CommandAction.RELEASE_QUARANTINE, event.event_id, resource_id, now)
    log = anomalies.get(event.tenant_id)
    if log is None or resource_id not in log.quarantined:
        return [command]
    log.quarantined = [r for r in log.quarantined if r != resource_id]
    anomalies.put(event.tenant_id, log)
    return [
        command,
        Emit(
            PROVISIONING_EVENTS,
            event.tenant_id,
            ProvisioningStatusEvent(
                event_id=derived_id(event.event_id, "released"),
                tenant_id=event.tenant_id,
                occurred_at=now,
                kind="anomaly-reaction",
                resource=resource_id,
                status="released",
                previous_status="quarantine",
                detail={"released_by": "admin", "actor": event.actor},
            ),
        )
    ]


def workload_command(stores: TenantStores, tenant: TenantRecord, action: CommandAction, cause_event_id: str,
                     workload: str, now: datetime) -> Emit:
    """The ``kubernetes`` command isolating (or releasing) ``workload``; its id derives from the cause."""
    (command,) = provisioning_commands(tenant, stores.quotas.get(tenant.tenant_id), action, cause_event_id, now,
                                       resources=("kubernetes",), extra_spec={"workload": workload})
    return Emit(PROVISIONING_COMMANDS, tenant.tenant_id, command)


def workload_fence(command: ProvisioningCommand, log: AnomalyLog | None) -> str | None:
    """Why a ``quarantine``/``release_quarantine`` command must not run (any more), or None: a quarantine whose
    workload was released since, a release whose workload was quarantined again since (the executor asks before
    every attempt, so commands of one workload cannot undo each other out of order)."""
    workload = command.spec.get("workload")
    quarantined = log is not None and workload in log.quarantined
    if command.action is CommandAction.QUARANTINE and not quarantined:
        return "the workload was released since"
    if command.action is CommandAction.RELEASE_QUARANTINE and quarantined:
        return "the workload was quarantined again since"
    return None
