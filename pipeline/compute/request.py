"""The compute request: what a tenant asks for ("4 H100 for 6 hours", "32 vCPUs for a nightly job").

The model only checks that a request is well formed and self-consistent. Whether *any* offer can
satisfy it is the optimizer's job (:func:`pipeline.compute.optimizer.choose`), which names the
constraint that excludes everything (returned by the REST layer as a 422).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.numbers import MAX_QUANTITY

Purpose = Literal["training", "fine-tuning", "inference", "notebook", "batch", "development", "other"]

#: Upper bound of one request's duration (90 days); longer needs are contracts, not requests.
MAX_DURATION_HOURS = 24.0 * 90

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def normalize_name(value: str) -> str:
    """The comparison key of provider, region and GPU names (case- and surrounding-space-insensitive)."""
    return value.strip().casefold()


class GpuSpec(BaseModel):
    """GPUs on one machine: accelerator name as in the catalogs (``H100``, ``A100-80GB``) and count."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
    count: int = Field(ge=1, le=64)


class Resources(BaseModel):
    """Minimum resources of the one machine the request needs (offers may have more)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    gpu: GpuSpec | None = None
    vcpus: float = Field(default=0.0, ge=0, le=4096)
    memory_gib: float = Field(default=0.0, ge=0, le=65536)
    storage_gib: float = Field(default=0.0, ge=0, le=1_000_000)

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu is not None else 0

    @model_validator(mode="after")
    def _something_requested(self) -> Resources:
        if self.gpu is None and self.vcpus <= 0:
            raise ValueError("resources: request at least one GPU or a positive number of vCPUs")
        return self


def _normalized_list(values: list[str] | None, field: str) -> list[str] | None:
    if values is None:
        return None
    out: list[str] = []
    for value in values:
        key = normalize_name(value)
        if not key:
            raise ValueError(f"{field}: empty name")
        if key not in out:
            out.append(key)
    return out


#: Upper bound of an idle window (7 days): a longer one is no idle termination at all.
MAX_IDLE_MINUTES = 7 * 24 * 60


class IdleTermination(BaseModel):
    """Opt-in idle termination of one request (docs/compute.md, "Idle termination"): terminate the machine once
    utilization below ``below_utilization`` has been *observed* for ``after_minutes`` (``resource-metrics``
    samples whose ``workload`` is the request id), after an ``idle-warning`` one grace period before."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    after_minutes: int = Field(ge=1, le=MAX_IDLE_MINUTES, description="Observed idle minutes before termination.")
    below_utilization: float = Field(
        ge=0, le=1, description="Utilization (0..1, the busier of GPUs and vCPUs) below which a sample is idle."
    )


class ComputeSpec(BaseModel):
    """What is requested, for whom aside (the fields of a ``compute-request-events`` event beyond the
    common ones; :class:`ComputeRequest` adds the tenant).

    ``regions``/``providers`` are allow lists (``None`` = any); ``exclude_regions``/``exclude_providers``
    are deny lists. Names are compared case-insensitively and stored normalised (lower case).
    ``max_price_per_hour`` caps the effective (discounted) hourly price. ``start_at`` is a reservation
    for a scheduled job and must be timezone-aware. ``idle_termination`` opts in to idle termination
    (``None``: never terminated as idle, only at the end of ``duration_hours``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    resources: Resources
    duration_hours: float = Field(gt=0, le=MAX_DURATION_HOURS)
    regions: list[str] | None = None
    exclude_regions: list[str] = Field(default_factory=list)
    providers: list[str] | None = None
    exclude_providers: list[str] = Field(default_factory=list)
    spot_allowed: bool = False
    max_price_per_hour: float | None = Field(default=None, gt=0, le=MAX_QUANTITY)
    purpose: Purpose = "other"
    start_at: AwareDatetime | None = None
    idle_termination: IdleTermination | None = Field(
        default=None,
        description=(
            "Opt-in idle termination; null (the default): never terminated as idle. Utilization is observed from "
            "resource-metrics samples of the same tenant whose workload is the request id "
            "(the id the provision response and the compute-status events carry); a request without such "
            "samples is never terminated as idle. An "
            "idle-warning (provisioning-events, kind compute-status) precedes termination by "
            "COMPUTE_IDLE_WARNING_SECONDS."
        ),
    )

    @field_validator("regions", "providers", mode="after")
    @classmethod
    def _allow_list(cls, values: list[str] | None, info: object) -> list[str] | None:
        field = getattr(info, "field_name", "list")
        normalized = _normalized_list(values, field)
        if normalized is not None and not normalized:
            raise ValueError(f"{field}: an empty allow list allows nothing; omit it (null) to allow any")
        return normalized

    @field_validator("exclude_regions", "exclude_providers", mode="after")
    @classmethod
    def _deny_list(cls, values: list[str], info: object) -> list[str]:
        return _normalized_list(values, getattr(info, "field_name", "list")) or []

    @model_validator(mode="after")
    def _consistent(self) -> ComputeSpec:
        for allow, deny, what in (
            (self.regions, self.exclude_regions, "regions"),
            (self.providers, self.exclude_providers, "providers"),
        ):
            if allow is not None and not set(allow) - set(deny):
                raise ValueError(f"{what}: every allowed {what[:-1]} is also excluded")
        return self

    @property
    def gpu_type_key(self) -> str | None:
        """Normalised GPU name, ``None`` for a CPU-only request."""
        gpu = self.resources.gpu
        return normalize_name(gpu.type) if gpu is not None else None

    def starts_after(self, now: datetime) -> bool:
        """True when this is a reservation for a time after ``now``."""
        return self.start_at is not None and self.start_at > now


class ComputeRequest(ComputeSpec):
    """A validated compute request of one tenant (the REST body; stored in the record)."""

    tenant_id: str = Field(pattern=_ID_PATTERN)

    def fingerprint(self) -> str:
        """The canonical hash of the request as validated (lists normalised, defaults filled in, numbers as
        floats): two spellings of the same request hash the same, a different request does not. Stored on the
        record, it tells a retry (same ``Idempotency-Key``, same body) from a reuse of the key."""
        # Without idle termination the field is left out: records stored before it existed keep their hash.
        exclude = {"idle_termination"} if self.idle_termination is None else None
        canonical = json.dumps(
            self.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def of(cls, tenant_id: str, spec: ComputeSpec) -> ComputeRequest:
        """The request of ``tenant_id`` for ``spec`` (only the spec's own fields are taken)."""
        fields = {name: getattr(spec, name) for name in ComputeSpec.model_fields}
        return cls(tenant_id=tenant_id, **fields)
