"""Typed records of every event the service consumes or emits.

These models are the single source of the JSON Schemas under ``pipeline/contract/schemas/`` (written by
``python -m pipeline schemas``; a test checks that the files in the repository match).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from pipeline.compute.request import ComputeSpec
from pipeline.numbers import Count, FiniteFloat, Quantity

SCHEMA_VERSION = 1

#: Tenant ids are DNS-label-like so that every backend can name its resources after them safely.
TENANT_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$"
TenantId = Annotated[
    str,
    Field(
        pattern=TENANT_ID_PATTERN,
        min_length=1,
        max_length=40,
        description="Lower-case letters, digits and inner hyphens, at most 40 characters.",
    ),
]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
#: User ids become Kubernetes RoleBinding subjects and annotations: a safe subset of printable ASCII.
OWNER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$"
UserId = Annotated[str, Field(min_length=1, max_length=128, pattern=OWNER_ID_PATTERN)]
#: A workload a scaling request names is a Deployment in the tenant's namespace: a DNS-1123 subdomain (the
#: Kubernetes API refuses anything else), at most 128 characters like every other identifier here.
WORKLOAD_NAME_PATTERN = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"
WorkloadName = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=WORKLOAD_NAME_PATTERN,
          description="A Deployment name: lower-case letters, digits, '-' and '.', at most 128 characters."),
]
#: Most replicas a scaling request may ask for (``desired_replicas``, and ``delta`` either way).
MAX_REQUESTED_REPLICAS = 10_000
#: Regions name cloud regions and appear in resource settings.
REGION_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Tier(StrEnum):
    FREE = "free"
    STANDARD = "standard"
    ENTERPRISE = "enterprise"


class Event(BaseModel):
    """Fields every platform event carries."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    event_id: Identifier = Field(description="Unique id of this event; redeliveries keep it.")
    tenant_id: TenantId
    occurred_at: AwareDatetime = Field(description="ISO-8601 time with a UTC offset.")


class TenantCreated(Event):
    name: str = Field(min_length=1, max_length=200)
    tier: Tier
    region: str | None = Field(default=None, max_length=32, pattern=REGION_PATTERN)
    owner_user_id: UserId | None = None


class TenantDeleted(Event):
    purge: bool = Field(False, description="Also delete data-bearing resources (keyspace, bucket, index).")


class UserCreated(Event):
    """A user of a tenant: granted access to the tenant's Kubernetes namespace and Pulsar namespace by the
    highest of its ``roles`` that is ``viewer``, ``editor`` or ``admin`` (``viewer`` when none is; other
    roles are kept in the record but grant nothing)."""

    #: The RoleBinding subject and the Pulsar role: the safe alphabet of owner ids.
    user_id: UserId
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    roles: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=32)


class UserDeleted(Event):
    """A user of a tenant removed: its grants on the tenant's resources are revoked."""

    user_id: UserId


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ResourceAnomaly(Event):
    resource_type: str = Field(min_length=1, max_length=64)
    resource_id: str = Field(min_length=1, max_length=256)
    anomaly_type: str = Field(min_length=1, max_length=64)
    severity: Severity
    value: FiniteFloat


class ScalingRequest(Event):
    """Set (``desired_replicas``) or change (``delta``) a workload's replicas: decided by the scaling engine
    (trigger ``request``) within the workload's policy bounds, budgets, quota and fair share, and applied
    through the Deployment's scale subresource (docs/scaling.md)."""

    workload: WorkloadName
    desired_replicas: int | None = Field(default=None, ge=0, le=MAX_REQUESTED_REPLICAS)
    delta: int | None = Field(default=None, ge=-MAX_REQUESTED_REPLICAS, le=MAX_REQUESTED_REPLICAS)
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one_of_desired_or_delta(self) -> ScalingRequest:
        if (self.desired_replicas is None) == (self.delta is None):
            raise ValueError("exactly one of desired_replicas and delta is required")
        return self


class QuotaResource(StrEnum):
    CPU_CORES = "cpu_cores"
    MEMORY_GIB = "memory_gib"
    GPUS = "gpus"
    STORAGE_GIB = "storage_gib"


class QuotaExceeded(Event):
    resource: QuotaResource
    used: Quantity
    limit: Quantity


class ResourceMetrics(Event):
    workload: Identifier
    cpu_cores: Quantity
    memory_gib: Quantity
    gpus: Quantity
    requests_per_s: Quantity | None = None
    replicas: Count | None = None


class ComputeRequested(Event, ComputeSpec):
    """A compute request of a tenant (MLOps jobs reserving GPUs ahead of a scheduled run): the fields of
    ``pipeline.compute.request.ComputeSpec`` (docs/compute.md). The request id is
    ``<tenant_id>.<request_name>``, or ``<tenant_id>.e<hash of event_id>`` without a name."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    request_name: str | None = Field(
        default=None, pattern=r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$",
        description="The requester's name for this request (lower-case letters, digits, inner hyphens).",
    )


class QuotaUpdateRequested(Event):
    """Internal: an enforcement change the REST API asks the tenant's owner worker to make: replace its quota
    (``quota``), lift over-quota marks (``lift_over_quota``; the quota stays) or release a quarantined
    workload (``release_quarantine``). Exactly one of them; one topic, so the owner applies them in order."""

    quota: dict[Annotated[str, Field(max_length=32)], Quantity] | None = Field(default=None, max_length=8)
    lift_over_quota: list[QuotaResource] = Field(default_factory=list, max_length=4)
    #: As long as an anomaly's ``resource_id`` may be: every workload quarantined can be released.
    release_quarantine: str | None = Field(default=None, min_length=1, max_length=256)
    actor: str = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_change(self) -> QuotaUpdateRequested:
        given = (self.quota is not None) + bool(self.lift_over_quota) + (self.release_quarantine is not None)
        if given != 1:
            raise ValueError("a quota update carries one of a quota, the over-quota marks to lift or the "
                             "quarantined workload to release")
        return self


# -- emitted ---------------------------------------------------------------------------------------


class CommandAction(StrEnum):
    CREATE = "create"
    DELETE = "delete"
    UPDATE_QUOTA = "update_quota"
    CREATE_USER = "create_user"
    DELETE_USER = "delete_user"
    #: Isolate (or stop isolating) the workload ``spec.workload`` (a quarantine by a critical resource anomaly).
    QUARANTINE = "quarantine"
    RELEASE_QUARANTINE = "release_quarantine"


class ProvisioningCommand(BaseModel):
    """One resource to provision (or tear down) for a tenant; ``command_id`` is deterministic."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    command_id: str
    tenant_id: TenantId
    resource: str
    action: CommandAction
    issued_at: AwareDatetime
    cause_event_id: str
    spec: dict[str, Any] = Field(default_factory=dict)
    generation: int = Field(
        1, ge=1, le=1_000_000,
        description="The tenant's incarnation the command belongs to; commands of an older one are dropped.",
    )


class ProvisioningStatusEvent(BaseModel):
    """A resource of a tenant changed state (announced on ``provisioning-events``)."""

    event_id: str
    tenant_id: TenantId
    occurred_at: AwareDatetime
    kind: Literal["resource-status", "quota-enforcement", "anomaly-reaction", "compute-status", "budget-alert"]
    resource: str
    status: str
    previous_status: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AuditEvent(BaseModel):
    """Who did what to which tenant, when, and how it ended (``audit-events``)."""

    event_id: str
    occurred_at: AwareDatetime
    actor: str
    action: str
    tenant_id: str | None
    outcome: Literal["accepted", "succeeded", "refused", "failed"]
    detail: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(BaseModel):
    """An input that could not be processed and why: the reason, and the original's first bytes (base64),
    full length and SHA-256, so a dead letter stays small whatever the input's size."""

    source_topic: str
    reason: str
    detail: str
    original_base64: str = Field(description="The original's first bytes (all of it when not truncated).")
    original_length: int = Field(0, ge=0, description="Length of the original in bytes.")
    original_sha256: str = Field("", description="SHA-256 of the whole original (hex).")
    original_truncated: bool = Field(False, description="Whether original_base64 holds only a prefix.")
    key: str | None
    occurred_at: AwareDatetime
