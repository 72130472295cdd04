"""Topic -> the record (or union of records) its messages carry, for every topic the service reads or writes.

The records themselves stay next to the logic that builds them; this module only names them, so that the schema
files, the docs and the tests have one list to check.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from pipeline.compute.lifecycle import ComputeRecord
from pipeline.contract import topics
from pipeline.contract.records import ProvisioningResult, ScalingCommand
from pipeline.events.models import (
    AuditEvent,
    ComputeRequested,
    DeadLetter,
    Event,
    ProvisioningCommand,
    ProvisioningStatusEvent,
    QuotaExceeded,
    QuotaUpdateRequested,
    ResourceAnomaly,
    ResourceMetrics,
    ScalingRequest,
    TenantCreated,
    TenantDeleted,
    UserCreated,
    UserDeleted,
)
from pipeline.scaling.records import ApplyReport, Demand, Grant, PolicyChange, ScalingDecisionEvent, Tick

#: A record on ``scaling-events``: told apart by ``kind``.
ScalingEvent = Annotated[ScalingCommand | ScalingDecisionEvent, Field(discriminator="kind")]

#: Input topic -> the record its events must match.
INPUT_EVENTS: dict[str, type[Event]] = {
    topics.TENANT_CREATED: TenantCreated,
    topics.TENANT_DELETED: TenantDeleted,
    topics.USER_CREATED: UserCreated,
    topics.USER_DELETED: UserDeleted,
    topics.RESOURCE_ANOMALY: ResourceAnomaly,
    topics.SCALING_REQUEST: ScalingRequest,
    topics.QUOTA_EXCEEDED: QuotaExceeded,
    topics.RESOURCE_METRICS: ResourceMetrics,
    topics.COMPUTE_REQUESTS: ComputeRequested,
}

#: Every topic that leaves the service (the output topics and the default dead-letter topic) -> its record type.
OUTPUT_RECORDS: dict[str, Any] = {
    topics.PROVISIONING_COMMANDS: ProvisioningCommand,
    topics.PROVISIONING_EVENTS: ProvisioningStatusEvent,
    topics.SCALING_EVENTS: ScalingEvent,
    topics.AUDIT_EVENTS: AuditEvent,
    topics.DEAD_LETTER_EVENTS: DeadLetter,
}

#: Kafka-only topics -> their record (no schema file: nothing outside the service reads them).
INTERNAL_RECORDS: dict[str, type[BaseModel]] = {
    topics.QUOTA_UPDATES: QuotaUpdateRequested,
    topics.PROVISIONING_RESULTS: ProvisioningResult,
    topics.COMPUTE_RECORDS: ComputeRecord,
    topics.SCALING_POLICY_REQUESTS: PolicyChange,
    topics.SCALING_TICKS: Tick,
    topics.SCALING_APPLIED: ApplyReport,
    topics.SCALING_GRANTS: Grant,
    topics.SCALING_DEMANDS: Demand,
}
