"""Records of the running scaling engine: table values, internal topic records, the decision event (and
:func:`decision_event`, :func:`snapshot_info`: what is published / shown of the stored ones).

Tables (one module each in ``tables/``): ``scaling-policies`` (tenant -> :class:`PolicySet`),
``scaling-state`` (tenant/workload -> :class:`WorkloadScaling`), ``scaling-decisions`` (tenant/workload/slot ->
:class:`StoredDecision`, a ring of the most recent), ``scaling-index`` (tenant -> :class:`WorkloadIndex`),
``model-snapshots`` (tenant/workload -> :class:`ModelSnapshot`), ``scaling-demands`` (tenant/workload ->
:class:`Demand`, one partition: the fair-share pool).

Internal topics (keyed by tenant id unless said otherwise): ``scaling-policy-requests``
(:class:`PolicyChange`), ``scaling-ticks`` (:class:`Tick`), ``scaling-applied`` (:class:`ApplyReport`),
``scaling-grants`` (:class:`Grant`), ``scaling-demands`` (:class:`Demand`, one partition, constant key).
Output: ``scaling-events`` (:class:`ScalingDecisionEvent`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from pipeline.events.models import Event
from pipeline.scaling.decision_models import ForecastSummary, ScalingDecision, ScalingState
from pipeline.scaling.fairshare import ResourceVector, TenantAllocation
from pipeline.scaling.policies import Policy

#: The key of every ``scaling-demands`` record (one partition: the one agent that computes DRF).
DEMANDS_KEY = "pool"

Trigger = Literal["window", "schedule", "fair_share", "observed", "request"]

#: Scaling requests of one workload waiting for its Deployment to be read (more are dead-lettered).
MAX_PENDING_REQUESTS = 16
#: Event ids of the requests a workload has taken, kept to recognise a redelivery (the newest).
KEEP_REQUEST_IDS = 64


def split_key(key: str) -> tuple[str, str]:
    tenant_id, _, workload = key.partition("/")
    return tenant_id, workload


# -- policies ----------------------------------------------------------------------------------------------


class PolicyDocument(RootModel[Policy]):
    """A policy document (``kind`` picks the model): the body of POST / PUT /scaling/policies."""


class PolicySet(BaseModel):
    """Every scaling policy of one tenant, by policy id."""

    tenant_id: str
    policies: dict[str, Policy] = Field(default_factory=dict)
    updated_at: AwareDatetime
    updated_by: str = ""
    version: int = 0
    """Incremented by every change (the engine keeps the parsed set per version)."""

    def for_workload(self, workload: str) -> list[Policy]:
        return [p for p in self.policies.values() if p.workload == workload]


class PolicyChange(Event):
    """Internal: the REST API asks the tenant's owner worker to put or delete one policy."""

    op: Literal["put", "delete"]
    policy_id: str
    policy: Policy | None = None
    actor: str = ""


# -- the workload's state ------------------------------------------------------------------------------------


class Observation(BaseModel):
    """What the Kubernetes API said about the workload's Deployment (``tenant-<id>/<workload>``)."""

    exists: bool
    replicas: int | None = None
    """``spec.replicas`` (what the scale subresource says)."""
    ready_replicas: int | None = None
    cpu_per_replica: float | None = None
    """CPU cores one pod requests (sum over its containers)."""
    memory_gib_per_replica: float | None = None
    gpus_per_replica: float | None = None
    scaled_by: str | None = None
    """Another autoscaler whose target is this Deployment (``HorizontalPodAutoscaler/<name>`` or
    ``ScaledObject/<name>``): the service's decisions for it are advisory and never applied."""
    observed_at: AwareDatetime


class ApplyReport(BaseModel):
    """Internal: the outcome of one read (and patch, when ``requested_replicas`` is set) of a Deployment."""

    tenant_id: str
    workload: str
    requested_replicas: int | None = None
    scaled: bool = False
    previous_replicas: int | None = None
    observation: Observation | None = None
    error: str | None = None
    reported_at: AwareDatetime


class PendingRequest(BaseModel):
    """A ``scaling-request-events`` event the engine took, waiting for a fresh read of the Deployment."""

    event_id: str
    desired_replicas: int | None = None
    delta: int | None = None
    reason: str = ""
    occurred_at: AwareDatetime


class RequestBasis(BaseModel):
    """The request a decision was made for, its target resolved once (a delta against the count read when
    it was first decided), so that a decision made again (a grant, an observation) asks for the same count."""

    event_id: str
    target: int
    asked: str
    """What the request said: ``desired_replicas 5`` or ``delta +2 from 3``."""
    reason: str = ""


class DecisionBasis(BaseModel):
    """The inputs of the last decision, kept so that it can be made again with a new grant or observation
    (its forecast is the state's: a workload with policies decides at every window it learns)."""

    at: AwareDatetime
    demand_window: list[float] = Field(default_factory=list)
    with_forecast: bool = False
    replicas_reported: int | None = None
    request: RequestBasis | None = None
    """Set when the decision was made for a scaling request (trigger ``request``, and its re-makes)."""


class LastDecision(BaseModel):
    decision_id: str
    at: AwareDatetime
    trigger: Trigger
    desired: int
    uncapped: int
    """The desired count before the fair-share cap (what the pool was asked for)."""
    granted: int | None
    """The grant that capped it (None: no fair sharing)."""
    grant_pending: bool = False
    """Made before the pool answered (capped at the current count while waiting)."""
    applied: bool
    apply_reason: str
    observed: bool
    """Whether the Deployment had been observed when it was made."""


class GrantInfo(BaseModel):
    allocation: TenantAllocation
    contended: bool
    computed_at: AwareDatetime


class WorkloadScaling(BaseModel):
    """Everything the decision loop remembers about one workload (``scaling-state``)."""

    tenant_id: str
    workload: str
    last_window_end: AwareDatetime | None = None
    recent: list[tuple[AwareDatetime, float]] = Field(default_factory=list)
    """Closed windows (end, demand in CPU cores), oldest first; enough to replay since the last snapshot."""
    replicas_reported: int | None = None
    """Replicas the workload's metrics last reported."""
    observations: int = 0
    """Windows the forecaster has learned (imputed gaps included)."""
    snapshot_observations: int = 0
    snapshot_window_end: AwareDatetime | None = None
    forecast: ForecastSummary | None = None
    state: ScalingState | None = None
    prior_state: ScalingState | None = None
    """The decision state before the last decision (a re-decision starts from it)."""
    basis: DecisionBasis | None = None
    last: LastDecision | None = None
    grant: GrantInfo | None = None
    observed: Observation | None = None
    demand_sent_at: AwareDatetime | None = None
    demand_seq: int = 0
    """Sequence number of the last demand sent to the pool; grants answering older ones are stale."""
    decisions: int = 0
    """Decisions stored so far (the next one's ``seq``)."""
    pending_requests: list[PendingRequest] = Field(default_factory=list)
    """Scaling requests waiting for the Deployment to be read (decided, in order, when it has been)."""
    request_ids: list[str] = Field(default_factory=list)
    """Event ids of the last ``KEEP_REQUEST_IDS`` requests taken: a redelivered one is not taken twice."""


class ModelInfo(BaseModel):
    observations: int
    snapshot_observations: int
    river_version: str | None = None


class StoredDecision(BaseModel):
    """One decision as stored and served: the decision with its explanation, plus what was done with it."""

    decision_id: str
    seq: int = 0
    """The workload's decision number (0, 1, ...): its slot in ``scaling-decisions`` is ``seq % recent``."""
    trigger: Trigger
    issued_at: AwareDatetime
    """Wall-clock time it was made (``decision.at`` is the decision's own clock: window end or timer)."""
    applied: bool
    """True when the new replica count was sent to the Kubernetes API."""
    apply_reason: str
    uncapped_replicas: int | None = None
    model: ModelInfo | None = None
    cause_event_id: str | None = None
    """The ``scaling-request-events`` event a request decision (or its re-make) was made for."""
    decision: ScalingDecision


class WorkloadIndex(BaseModel):
    """The workloads of a tenant that have a scaling state (``scaling-index``)."""

    tenant_id: str
    workloads: list[str] = Field(default_factory=list)


class ModelSnapshot(BaseModel):
    """A forecaster snapshot (``OnlineForecaster.to_snapshot``, base64) with what it was taken from."""

    tenant_id: str
    workload: str
    river_version: str
    observations: int
    window_end: AwareDatetime | None
    taken_at: AwareDatetime
    size_bytes: int
    data_b64: str
    signature: str | None = None
    """HMAC-SHA256 (hex) of the workload key and the blob with SNAPSHOT_SIGNING_KEY; without it the snapshot
    is refused (``pipeline.scaling.snapshot_signing``)."""


# -- ticks, demands, grants ----------------------------------------------------------------------------------


class Tick(BaseModel):
    """Internal: evaluate the scheduled policies of ``tenant_id`` at ``at`` (the timer's clock)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    tenant_id: str
    at: AwareDatetime


class Demand(BaseModel):
    """Internal: a workload's desired capacity, for the fair-share pool (``scaling-demands``)."""

    tenant_id: str
    workload: str
    replicas: int
    per_replica: ResourceVector
    tier: str
    weight: float
    quota: ResourceVector | None = None
    decided_at: AwareDatetime
    sent_at: AwareDatetime
    seq: int = 0
    """Per workload, increasing: the owner ignores grants that answer an older demand."""
    last_granted: int | None = None
    last_limited_by: str | None = None


class Grant(BaseModel):
    """Internal: what the fair-share pool grants one workload (``scaling-grants``, keyed by tenant)."""

    tenant_id: str
    workload: str
    allocation: TenantAllocation
    contended: bool
    capacity: ResourceVector
    used: ResourceVector
    computed_at: AwareDatetime
    demand_seq: int = 0
    """The ``seq`` of the workload's demand this grant was computed for."""


# -- the output event ------------------------------------------------------------------------------------------


class ScalingDecisionEvent(BaseModel):
    """A scaling decision on ``scaling-events`` (next to the ``scaling-command`` records)."""

    kind: Literal["scaling-decision"] = "scaling-decision"
    command_id: str
    tenant_id: str
    workload: str
    desired_replicas: int
    current_replicas: int
    action: str
    status: str
    """``accepted`` (sent to the Kubernetes API) or why not: ``unchanged``, ``forecast-only``, ``not-applied``."""
    binding: str
    trigger: Trigger
    reason: str
    issued_at: AwareDatetime
    decided_at: AwareDatetime
    cause_event_id: str | None = None
    """The scaling request's event id, for a decision made for one (``command_id`` is derived from it)."""
    decision: ScalingDecision


def decision_event(stored: StoredDecision) -> ScalingDecisionEvent:
    decision = stored.decision
    if stored.applied:
        status = "accepted"
    elif stored.apply_reason == "unchanged":
        status = "unchanged"
    elif stored.apply_reason.startswith("forecast-only"):
        status = "forecast-only"
    else:
        status = "not-applied"
    return ScalingDecisionEvent(
        command_id=stored.decision_id, tenant_id=decision.tenant_id, workload=decision.workload,
        desired_replicas=decision.desired_replicas, current_replicas=decision.current_replicas,
        action=decision.action, status=status, binding=decision.binding, trigger=stored.trigger,
        reason=decision.explanation, issued_at=stored.issued_at, decided_at=decision.at,
        cause_event_id=stored.cause_event_id, decision=decision,
    )


def snapshot_info(snapshot: ModelSnapshot) -> dict[str, Any]:
    """A snapshot's metadata (what the API shows; never the blob)."""
    return snapshot.model_dump(mode="json", exclude={"data_b64", "signature"})
