"""Resource anomalies: record them and apply the configured reaction (notify, scale or quarantine)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pipeline.contract.records import ScalingCommand
from pipeline.contract.topics import PROVISIONING_EVENTS, SCALING_EVENTS
from pipeline.events.models import ProvisioningStatusEvent, QuotaUpdateRequested, ResourceAnomaly, Severity
from pipeline.outputs import Emit, derived_id
from pipeline.tenants.logic import TenantStores, require_tenant
from pipeline.tenants.models import AnomalyLog, AnomalyRecord
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
    require_tenant(stores, event.tenant_id)
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
    ``quarantined`` list (the scaling hold and the compute refusal go with it) and the release is announced on
    ``provisioning-events``. A workload not quarantined (a redelivered release) changes nothing."""
    require_tenant(stores, event.tenant_id)
    resource_id = event.release_quarantine
    log = anomalies.get(event.tenant_id)
    if resource_id is None or log is None or resource_id not in log.quarantined:
        return []
    log.quarantined = [r for r in log.quarantined if r != resource_id]
    anomalies.put(event.tenant_id, log)
    return [
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
