"""Scaling policy documents: validated pydantic models, stored as JSON in the policies table.

Four kinds share :class:`PolicyBase` (``policy_id``, ``tenant_id``, ``workload``, ``kind``,
``enabled``, ``min_replicas``, ``max_replicas``, ``combine``):

* :class:`TargetTrackingPolicy` (reactive): keep ``demand / (replicas * capacity_per_replica)`` near
  ``target_utilization``, with the Kubernetes HPA ``behavior`` semantics (tolerance, rate limits per
  period, stabilization windows) - see :mod:`pipeline.scaling.hpa`;
* :class:`PredictivePolicy`: provision for a forecast quantile ``lead_steps`` ahead (the boot time),
  scale in only when the upper band over the whole look-ahead allows it, optionally forecast-only;
* :class:`ScheduledPolicy`: cron windows (IANA time zone) that set min / max / desired replicas;
* :class:`CostAwarePolicy`: budget per hour and per month, prices per capacity class; a cap, never a
  reason to scale up.

How they combine (:func:`pipeline.scaling.decide.decide`): the maximum of the desired values of the
enabled, non-forecast-only policies, unless some policy says ``combine="override"`` (then the maximum
of the overriding ones wins); bounded by the largest ``min_replicas`` and the smallest ``max_replicas``
(active scheduled windows replace those bounds, as AWS scheduled actions do); then capped by the budget
and the fair-share grant.

Parse a document with :func:`parse_policy` (raises ``pydantic.ValidationError`` -> HTTP 422).

Kubernetes spellings: a document may use the names users paste from an HPA v2 (``minReplicas``,
``maxReplicas``, ``behavior.scaleUp`` / ``scaleDown`` with ``stabilizationWindowSeconds``, ``selectPolicy``
and ``policies[].periodSeconds``; ``averageUtilization`` as the HPA's percentage, 70 = 0.7) or a KEDA
ScaledObject (``minReplicaCount``, ``maxReplicaCount``; ``desiredReplicas`` of its cron trigger in a
schedule window), and ``targetUtilization`` for ``target_utilization``. Each is an alias of the snake_case
field (``K8S_ALIASES``); a document is stored and shown in snake_case. KEDA's ``pollingInterval``,
``cooldownPeriod`` and ``idleReplicaCount`` have no equivalent (the engine decides once per utilization
window and never scales to zero on its own): they are refused with that reason rather than ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from pipeline.numbers import MAX_COUNT, Quantity

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

PolicyKind = Literal["target_tracking", "predictive", "scheduled", "cost_aware"]

#: Per snake_case field, the spellings of the Kubernetes HPA v2 and KEDA objects it also accepts.
K8S_ALIASES: dict[str, tuple[str, ...]] = {
    "min_replicas": ("minReplicas", "minReplicaCount"),
    "max_replicas": ("maxReplicas", "maxReplicaCount"),
    "desired_replicas": ("desiredReplicas",),
    "target_utilization": ("targetUtilization",),
    "scale_up": ("scaleUp",),
    "scale_down": ("scaleDown",),
    "stabilization_window_seconds": ("stabilizationWindowSeconds",),
    "select_policy": ("selectPolicy",),
    "period_seconds": ("periodSeconds",),
}
#: KEDA fields with no equivalent here, and what to use instead.
_NO_EQUIVALENT: dict[str, str] = {
    "pollingInterval": "the engine decides once per utilization window (UTILIZATION_WINDOW_SECONDS)",
    "cooldownPeriod": "use behavior.scaleDown.stabilizationWindowSeconds (target_tracking) or "
    "scale_in_stabilization_seconds (predictive) to hold capacity after load drops",
    "idleReplicaCount": "a policy never scales below min_replicas; set min_replicas",
}
#: HPA's ``averageUtilization`` is a percentage (70 = target_utilization 0.7), at most 200 %.
_MAX_PERCENT = 200


def _k8s(name: str) -> AliasChoices:
    """The field ``name`` under its own name or one of its Kubernetes spellings (``K8S_ALIASES``)."""
    return AliasChoices(name, *K8S_ALIASES[name])


def _refuse_unmapped(data: Any) -> Any:
    if isinstance(data, dict):
        for name, instead in _NO_EQUIVALENT.items():
            if name in data:
                raise ValueError(f"{name} (KEDA) has no equivalent in a scaling policy: {instead}")
    return data


def _average_utilization(data: Any) -> Any:
    """An HPA ``averageUtilization`` (percent) as ``target_utilization`` (fraction)."""
    if not isinstance(data, dict) or "averageUtilization" not in data:
        return data
    data = dict(data)
    percent = data.pop("averageUtilization")
    if any(name in data for name in ("target_utilization", *K8S_ALIASES["target_utilization"])):
        raise ValueError("give averageUtilization (percent) or target_utilization (fraction), not both")
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 < percent <= _MAX_PERCENT:
        raise ValueError(f"averageUtilization is the HPA's whole percentage, 1 to {_MAX_PERCENT} (70 = 0.7)")
    data["target_utilization"] = percent / 100
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RatePolicy(_Strict):
    """One HPA ``HPAScalingPolicy``: at most ``value`` pods / percent per ``period_seconds``."""

    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0, le=100_000)
    period_seconds: int = Field(gt=0, le=1800, validation_alias=_k8s("period_seconds"))


class ScalingRules(_Strict):
    """One direction of the HPA ``behavior`` (``HPAScalingRules``)."""

    stabilization_window_seconds: int = Field(0, ge=0, le=3600, validation_alias=_k8s("stabilization_window_seconds"))
    select_policy: Literal["Max", "Min", "Disabled"] = Field("Max", validation_alias=_k8s("select_policy"))
    policies: list[RatePolicy] = Field(default_factory=list)


def _default_scale_up() -> ScalingRules:
    # Kubernetes defaults: no stabilization, max(100 % , 4 pods) per 15 s.
    return ScalingRules(
        stabilization_window_seconds=0,
        select_policy="Max",
        policies=[
            RatePolicy(type="Percent", value=100, period_seconds=15),
            RatePolicy(type="Pods", value=4, period_seconds=15),
        ],
    )


def _default_scale_down() -> ScalingRules:
    # Kubernetes defaults: 300 s stabilization, up to 100 % per 15 s.
    return ScalingRules(
        stabilization_window_seconds=300,
        select_policy="Max",
        policies=[RatePolicy(type="Percent", value=100, period_seconds=15)],
    )


class Behavior(_Strict):
    """HPA ``behavior``: rules for scaling up and down (Kubernetes defaults when omitted)."""

    scale_up: ScalingRules = Field(default_factory=_default_scale_up, validation_alias=_k8s("scale_up"))
    scale_down: ScalingRules = Field(default_factory=_default_scale_down, validation_alias=_k8s("scale_down"))

    def longest_period_seconds(self) -> int:
        periods = [p.period_seconds for p in (*self.scale_up.policies, *self.scale_down.policies)]
        return max(periods, default=0)

    def longest_window_seconds(self) -> int:
        return max(self.scale_up.stabilization_window_seconds, self.scale_down.stabilization_window_seconds)


class PolicyBase(_Strict):
    policy_id: str = Field(pattern=_ID_PATTERN)
    tenant_id: str = Field(pattern=_ID_PATTERN)
    workload: str = Field(pattern=_ID_PATTERN)
    enabled: bool = True
    description: str = Field("", max_length=1000)
    min_replicas: int = Field(0, ge=0, le=100_000, validation_alias=_k8s("min_replicas"))
    max_replicas: int = Field(100, ge=0, le=100_000, validation_alias=_k8s("max_replicas"))
    combine: Literal["max", "override"] = "max"
    """``max``: take part in the maximum; ``override``: this policy's desired value wins over the
    non-overriding ones (the maximum among overriding policies)."""

    @model_validator(mode="before")
    @classmethod
    def _kubernetes_spellings(cls, data: Any) -> Any:
        return _refuse_unmapped(data)

    @model_validator(mode="after")
    def _check_bounds(self) -> PolicyBase:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class TargetTrackingPolicy(PolicyBase):
    kind: Literal["target_tracking"] = "target_tracking"
    metric: str = Field("cpu", max_length=64)
    target_utilization: float = Field(gt=0.0, le=2.0, validation_alias=_k8s("target_utilization"))
    """Demand per unit of replica capacity to aim for (0.7 = 70 %)."""
    tolerance: float = Field(0.1, ge=0.0, lt=1.0)
    """No change while ``|utilization / target - 1| <= tolerance`` (HPA default 0.1)."""
    behavior: Behavior = Field(default_factory=Behavior)

    @model_validator(mode="before")
    @classmethod
    def _hpa_percentage(cls, data: Any) -> Any:
        return _average_utilization(data)


class PredictivePolicy(PolicyBase):
    kind: Literal["predictive"] = "predictive"
    metric: str = Field("cpu", max_length=64)
    target_utilization: float = Field(0.7, gt=0.0, le=2.0, validation_alias=_k8s("target_utilization"))
    lead_steps: int = Field(0, ge=0, le=10_000)
    """Boot time of new capacity in forecast steps: a replica requested now serves step
    ``lead_steps + 1`` onwards, so scale-out provisions for that step."""
    horizon_steps: int | None = Field(None, ge=1, le=10_000)
    """Forecast steps looked at (default ``lead_steps + 1``). Scale-out provisions for the maximum over
    steps ``lead_steps + 1 .. horizon_steps``; scale-in must also cover steps ``1 .. horizon_steps``."""
    quantile: float = Field(0.9, gt=0.0, lt=1.0)
    """Forecast quantile to provision for."""
    scale_in_quantile: float | None = Field(None, gt=0.0, lt=1.0)
    """Upper band that must allow a scale-in over steps ``1 .. horizon``. Default
    ``quantile ** (1 / horizon)``: removed capacity cannot come back within the boot time, so the
    per-step level is raised until the chance of needing it at *any* of those steps is about
    ``1 - quantile``."""
    scale_in_stabilization_seconds: int = Field(0, ge=0, le=86_400)
    """Like the HPA's scale-down stabilization window: scale in only to the largest value the
    policy recommended within this window."""
    forecast_only: bool = False
    """Compute and explain the desired value but never act on it."""
    min_residuals: int = Field(30, ge=0, le=MAX_COUNT)
    """Below this many forecast residuals behind the band, the policy abstains (warm-up)."""

    @model_validator(mode="before")
    @classmethod
    def _hpa_percentage(cls, data: Any) -> Any:
        return _average_utilization(data)

    @model_validator(mode="after")
    def _check_horizon(self) -> PredictivePolicy:
        if self.horizon_steps is not None and self.horizon_steps < self.lead_steps + 1:
            raise ValueError("horizon_steps must be at least lead_steps + 1")
        return self

    @property
    def effective_horizon(self) -> int:
        return self.horizon_steps if self.horizon_steps is not None else self.lead_steps + 1

    @property
    def effective_scale_in_quantile(self) -> float:
        if self.scale_in_quantile is not None:
            return self.scale_in_quantile
        return round(float(self.quantile ** (1.0 / self.effective_horizon)), 4)


class ScheduleWindow(_Strict):
    """From each time ``cron`` fires (in ``timezone``) for ``duration_minutes``: set the bounds /
    desired replicas. Standard 5-field cron (croniter)."""

    name: str = Field("", max_length=128)
    cron: str = Field(max_length=256)
    timezone: str = "UTC"
    duration_minutes: int = Field(gt=0, le=31 * 24 * 60)
    min_replicas: int | None = Field(None, ge=0, le=100_000, validation_alias=_k8s("min_replicas"))
    max_replicas: int | None = Field(None, ge=0, le=100_000, validation_alias=_k8s("max_replicas"))
    desired_replicas: int | None = Field(None, ge=0, le=100_000, validation_alias=_k8s("desired_replicas"))

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a valid 5-field cron expression: {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_+\-/]{1,64}", value):
            raise ValueError(f"not an IANA time zone name: {value!r}")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone: {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _check_values(self) -> ScheduleWindow:
        if self.min_replicas is None and self.max_replicas is None and self.desired_replicas is None:
            raise ValueError("a schedule window must set min_replicas, max_replicas or desired_replicas")
        if self.min_replicas is not None and self.max_replicas is not None:
            if self.min_replicas > self.max_replicas:
                raise ValueError("window min_replicas must not exceed max_replicas")
        return self


class ScheduledPolicy(PolicyBase):
    kind: Literal["scheduled"] = "scheduled"
    windows: list[ScheduleWindow] = Field(min_length=1, max_length=100)


class CapacityClass(_Strict):
    """A kind of capacity (on-demand, spot, reserved...) with its price."""

    name: str = Field(pattern=_ID_PATTERN)
    price_per_unit_hour: Quantity
    """Price of one unit of capacity (the unit of ``capacity_per_replica``) for one hour."""
    max_replicas: int | None = Field(None, ge=0, le=100_000, validation_alias=_k8s("max_replicas"))
    """How many replicas this class can supply (None: unlimited)."""


class CostAwarePolicy(PolicyBase):
    kind: Literal["cost_aware"] = "cost_aware"
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    budget_per_hour: Quantity | None = None
    budget_per_month: Quantity | None = None
    capacity_classes: list[CapacityClass] = Field(min_length=1, max_length=20)
    prefer_cheaper: bool = True
    """Fill the cheapest classes first (otherwise in the listed order)."""
    budget_over_min_replicas: bool = True
    """When the budget cannot pay for ``min_replicas``: True caps below the minimum (said so in the
    explanation); False keeps the minimum and flags the decision as over budget."""

    @model_validator(mode="after")
    def _check_budget(self) -> CostAwarePolicy:
        if self.budget_per_hour is None and self.budget_per_month is None:
            raise ValueError("a cost_aware policy needs budget_per_hour or budget_per_month")
        names = [c.name for c in self.capacity_classes]
        if len(set(names)) != len(names):
            raise ValueError("capacity class names must be unique")
        return self


Policy = Annotated[
    TargetTrackingPolicy | PredictivePolicy | ScheduledPolicy | CostAwarePolicy,
    Field(discriminator="kind"),
]

_POLICY_ADAPTER: TypeAdapter[Policy] = TypeAdapter(Policy)
_POLICY_LIST_ADAPTER: TypeAdapter[list[Policy]] = TypeAdapter(list[Policy])


def parse_policy(document: dict[str, Any] | str | bytes, *, strict: bool = False) -> Policy:
    """Validate one policy document (a dict or JSON text). Raises ``pydantic.ValidationError``.

    ``strict`` validates JSON text with exactly the JSON types of the schema (``true`` is not ``1``)."""
    if isinstance(document, str | bytes):
        return _POLICY_ADAPTER.validate_json(document, strict=strict)
    return _POLICY_ADAPTER.validate_python(document, strict=strict)


def parse_policies(documents: list[dict[str, Any]] | str | bytes) -> list[Policy]:
    """Validate a list of policy documents (a list or JSON text)."""
    if isinstance(documents, str | bytes):
        return _POLICY_LIST_ADAPTER.validate_json(documents)
    return _POLICY_LIST_ADAPTER.validate_python(documents)


def policy_json_schema() -> dict[str, Any]:
    """JSON schema of a policy document (for the API docs)."""
    return _POLICY_ADAPTER.json_schema()
