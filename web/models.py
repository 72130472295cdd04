"""Request and response bodies of the REST API.

Handlers build every response from these models, and the OpenAPI document's schemas are generated from the
same models, so the document cannot drift from what the server sends.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.compute.costs import TenantCosts
from pipeline.compute.lifecycle import ComputeHeld
from pipeline.events.models import REGION_PATTERN, QuotaResource, TenantId, Tier, UserId
from pipeline.numbers import MAX_COUNT
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.models import (
    OverQuota,
    ProvisioningStatus,
    QuotaRecord,
    ResourceStatus,
    TenantRecord,
    UserView,
)
from pipeline.usage import UsageRecord

# -- requests --------------------------------------------------------------------------------------


class ProvisionRequest(BaseModel):
    """A tenant to provision: the fields of a tenant-created event (the server adds event_id and occurred_at)."""

    model_config = ConfigDict(extra="forbid", title="ProvisionRequest")

    tenant_id: TenantId
    name: str = Field(min_length=1, max_length=200)
    tier: Tier | None = Field(
        default=None,
        description="Only a platform-admin may choose the tier (it sets the quota and the fair-share weight); "
        "left out, the tenant gets the self-service tier (SELF_SERVICE_TIER, default free). A tenant-admin "
        "asking for any other tier is refused with 403.",
    )
    region: str | None = Field(default=None, max_length=32, pattern=REGION_PATTERN)
    owner_user_id: UserId | None = None


class ProvisionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(False, description="Return the plan (what each backend would get) and change nothing.")


class TenantsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = Field(0, ge=0, le=MAX_COUNT, description="How many tenants to skip (ordered by tenant id).")
    limit: int = Field(50, ge=1, le=200, description="Page size, at most 200.")


class UsersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = Field(0, ge=0, le=MAX_COUNT, description="How many users to skip (ordered by user id).")
    limit: int = Field(50, ge=1, le=200, description="Page size, at most 200.")


class DeleteQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purge: bool = Field(False, description="Also delete the data-bearing resources (keyspace, bucket, index).")


# -- responses -------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. tenant-not-found, validation-error.")
    message: str = Field(description="Human-readable explanation.")
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="More about the error: validation errors under 'errors', allowed methods under "
        "'allowed_methods', the log correlation id under 'error_id'.",
    )


class ErrorBody(BaseModel):
    """An RFC 9457 problem details document (``application/problem+json``), with the service's ``code``."""

    type: str = Field("about:blank", description="The problem type: about:blank (the code tells the kind).")
    title: str = Field(description="The HTTP status's reason phrase, e.g. 'Not Found'.")
    status: int = Field(ge=400, le=599, description="The HTTP status code of the response.")
    detail: str = Field(description="Human-readable explanation of this occurrence.")
    instance: str | None = Field(
        None, description="The request's path (left out past 256 characters); for a 500, details.error_id (the id "
        "of the server's log line) as a UUID URN."
    )
    code: str = Field(description="Stable machine-readable code, e.g. tenant-not-found, validation-error.")
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="More about the error: validation errors under 'errors', allowed methods under "
        "'allowed_methods', the log correlation id under 'error_id'.",
    )
    error: ErrorDetail = Field(description="The same code, message (= detail) and details in the error body of "
                               "earlier versions, kept for their clients.")


class ProvisionAccepted(BaseModel):
    tenant_id: str
    event_id: str = Field(description="The id of the tenant-created event that was sent.")
    status: Literal["accepted"] = "accepted"
    status_url: str


class ProvisionPlan(BaseModel):
    tenant_id: str
    dry_run: Literal[True] = True
    event: dict[str, Any] = Field(description="The tenant-created event that would be sent.")
    plan: dict[str, Any] = Field(description="Per backend, exactly what would be created.")


class ProvisioningStatusResponse(BaseModel):
    tenant_id: str
    overall: str = Field(
        description="unknown, in-progress, ready, failed, refused, retrying, waiting or deleted (worst resource wins)."
    )
    resources: dict[str, ResourceStatus]

    @classmethod
    def of(cls, tenant_id: str, status: ProvisioningStatus | None) -> ProvisioningStatusResponse:
        status = status or ProvisioningStatus(tenant_id=tenant_id)
        return cls(tenant_id=tenant_id, overall=status.overall, resources=status.resources)


class UsageTotals(BaseModel):
    cpu_cores: float = 0.0
    memory_gib: float = 0.0
    gpus: float = 0.0


class QuotaResponse(BaseModel):
    tenant_id: str
    limits: Quota
    over_quota: dict[QuotaResource, OverQuota] = Field(
        description="Resources the tenant is over quota on; new provisioning gated by them is refused."
    )
    usage: UsageTotals = Field(
        description="What the tenant uses: the latest sample of every workload, plus what its compute allocations "
        "hold (compute); a workload named after a counted compute request is that machine's own utilization and "
        "is counted once, as the allocation."
    )
    workloads: int = Field(description="How many sampled workloads the usage totals cover.")
    compute: UsageTotals = Field(
        default_factory=UsageTotals,
        description="Included in usage: the GPUs, vCPUs and memory of the machines the tenant's compute "
        "allocations hold (provisioning, running or being released).",
    )
    compute_allocations: int = Field(0, description="How many compute allocations the compute totals cover.")
    updated_at: AwareDatetime
    updated_by: str

    @classmethod
    def of(cls, quota: QuotaRecord, usage: UsageRecord | None, held: ComputeHeld | None = None) -> QuotaResponse:
        """The quota view; ``held`` (the tenant's compute allocations) counts in the usage: without it a tenant
        running a 4-GPU machine showed 0 GPUs used."""
        held = held or ComputeHeld(tenant_id=quota.tenant_id)
        machines = set(held.request_ids)
        sampled = [sample for name, sample in (usage.workloads.items() if usage else ()) if name not in machines]
        compute = UsageTotals(cpu_cores=held.cpu_cores, memory_gib=held.memory_gib, gpus=held.gpus)
        return cls(
            tenant_id=quota.tenant_id,
            limits=quota.limits,
            over_quota=quota.over_quota,
            usage=UsageTotals(
                cpu_cores=sum(s.cpu_cores for s in sampled) + compute.cpu_cores,
                memory_gib=sum(s.memory_gib for s in sampled) + compute.memory_gib,
                gpus=sum(s.gpus for s in sampled) + compute.gpus,
            ),
            workloads=len(sampled),
            compute=compute,
            compute_allocations=held.allocations,
            updated_at=quota.updated_at,
            updated_by=quota.updated_by,
        )


class QuotaAccepted(BaseModel):
    tenant_id: str
    status: Literal["accepted"] = "accepted"
    requested: Quota
    quota_url: str


class OverQuotaLiftAccepted(BaseModel):
    tenant_id: str
    resource: QuotaResource
    status: Literal["accepted"] = "accepted"
    quota_url: str


class QuarantineReleaseAccepted(BaseModel):
    tenant_id: str
    resource_id: str
    status: Literal["accepted"] = "accepted"
    tenant_url: str


class DeleteAccepted(BaseModel):
    tenant_id: str
    status: Literal["accepted"] = "accepted"
    purge: bool
    status_url: str


class TenantPage(BaseModel):
    items: list[TenantRecord]
    total: int = Field(description="How many tenants the caller may see in all.")
    offset: int
    limit: int


class UserPage(BaseModel):
    items: list[UserView] = Field(description="Users not yet deleted, with their per-resource access status.")
    total: int = Field(description="How many such users the tenant has.")
    offset: int
    limit: int


class TenantView(BaseModel):
    """Everything the dashboard shows of one tenant (the server-sent ``tenant`` event and snapshot rows)."""

    tenant_id: str
    tenant: TenantRecord | None
    quota: QuotaResponse | None
    status: ProvisioningStatusResponse
    costs: TenantCosts | None = None
