"""Records the service keeps per tenant (values of the tables in ``tables/``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field

from pipeline.events.models import QuotaResource, Tier
from pipeline.provisioners.tiers import Quota


class TenantState(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"
    DELETED = "deleted"


class TenantRecord(BaseModel):
    tenant_id: str
    name: str
    tier: Tier
    region: str | None = None
    owner_user_id: str | None = None
    state: TenantState = TenantState.ACTIVE
    created_at: AwareDatetime
    updated_at: AwareDatetime
    source_event_id: str
    #: Incarnation of this tenant id: each tenant-created event that (re)creates the id starts the next one.
    #: Every command carries it, and the executor drops a command of an older one (fencing).
    generation: int = Field(1, ge=1, le=1_000_000)
    #: The event time of the delete that started the teardown: a create event from before it is stale.
    deleted_at: AwareDatetime | None = None
    #: Whether that delete was a purge; a tenant deleted without purge keeps its data, so its id is not reused.
    purged: bool = False

    @property
    def data_retained(self) -> bool:
        """Deleted without purge: the keyspace, bucket, index (and non-empty namespace) are still there."""
        return self.state is TenantState.DELETED and not self.purged


def quota_limit(quota: Quota, resource: QuotaResource) -> float:
    value: float = getattr(quota, resource.value)
    return value


class OverQuota(BaseModel):
    used: float
    limit: float
    since: AwareDatetime
    event_id: str


class QuotaRecord(BaseModel):
    tenant_id: str
    limits: Quota
    over_quota: dict[QuotaResource, OverQuota] = Field(default_factory=dict)
    updated_at: AwareDatetime
    updated_by: str


class ResourceState(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    READY = "ready"
    RETRYING = "retrying"
    #: The backend cannot be reached (still starting, or down): the command waits for it (not a failure).
    WAITING = "waiting"
    FAILED = "failed"
    DRIFTED = "drifted"
    REFUSED = "refused"
    #: The backend is switched off by configuration (KUBERNETES_ENABLED=false): nothing was done, nothing to retry.
    SKIPPED = "skipped"
    DELETING = "deleting"
    DELETED = "deleted"


class ResourceStatus(BaseModel):
    resource: str
    status: ResourceState
    command_id: str
    updated_at: AwareDatetime
    attempts: int = 0
    last_error: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class ProvisioningStatus(BaseModel):
    tenant_id: str
    resources: dict[str, ResourceStatus] = Field(default_factory=dict)

    @property
    def overall(self) -> str:
        states = {r.status for r in self.resources.values()}
        if not states:
            return "unknown"
        for state in (ResourceState.FAILED, ResourceState.REFUSED, ResourceState.RETRYING, ResourceState.WAITING):
            if state in states:
                return state.value
        # A resource skipped by configuration neither holds a tenant back nor keeps it from being deleted.
        if ResourceState.READY in states and states <= {ResourceState.READY, ResourceState.SKIPPED}:
            return "ready"
        if ResourceState.DELETED in states and states <= {ResourceState.DELETED, ResourceState.SKIPPED}:
            return "deleted"
        return "in-progress"


class UserState(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"
    DELETED = "deleted"


class UserRecord(BaseModel):
    tenant_id: str
    user_id: str
    email: str
    roles: list[str]
    created_at: AwareDatetime
    source_event_id: str
    state: UserState = UserState.ACTIVE
    #: The user-deleted event that started the revokes, and its time (a create from before it is stale).
    delete_event_id: str | None = None
    deleted_at: AwareDatetime | None = None
    #: Per resource holding the user's access: the status of its latest grant or revoke command, updated
    #: from the command's results like the tenant's provisioning status.
    resources: dict[str, ResourceStatus] = Field(default_factory=dict)

    @property
    def overall(self) -> str:
        return ProvisioningStatus(tenant_id=self.tenant_id, resources=self.resources).overall


class UserView(BaseModel):
    """A user as the REST API shows it: the record and its overall status (worst resource wins)."""

    tenant_id: str
    user_id: str
    email: str
    roles: list[str]
    state: UserState
    overall: str
    resources: dict[str, ResourceStatus]
    created_at: AwareDatetime
    deleted_at: AwareDatetime | None = None

    @classmethod
    def of(cls, user: UserRecord) -> UserView:
        return cls(tenant_id=user.tenant_id, user_id=user.user_id, email=user.email, roles=user.roles,
                   state=user.state, overall=user.overall, resources=user.resources, created_at=user.created_at,
                   deleted_at=user.deleted_at)


class TenantUsers(BaseModel):
    """The users of one tenant not yet deleted, ordered by user id (read by tenant, routed to its owner)."""

    tenant_id: str
    users: list[UserView] = Field(default_factory=list)


class AnomalyRecord(BaseModel):
    event_id: str
    resource_type: str
    resource_id: str
    anomaly_type: str
    severity: str
    value: float
    reaction: str
    occurred_at: datetime


class AnomalyLog(BaseModel):
    tenant_id: str
    recent: list[AnomalyRecord] = Field(default_factory=list)
    quarantined: list[str] = Field(default_factory=list)
