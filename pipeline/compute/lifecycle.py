"""Lifecycle of a compute request: states, the stored record, auto-termination and the capacity view.

States: ``requested -> allocating -> provisioning -> running -> terminating -> terminated``, and
``failed``. :func:`transition` is pure and refuses illegal transitions. :class:`ComputeRecord` is the
value stored in the changelog-backed table (JSON via pydantic); it never holds secrets (access is a
:class:`~pipeline.compute.access.MaskedAccess`). :func:`termination_due` decides automatic termination
at the end of the duration; :func:`idle_step` decides the opt-in idle warning and termination from the
observed utilization samples. :func:`capacity_view`
computes available capacity by provider/region/resource type and the tenant's remaining quota/budget
from the offers and the current records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.compute.access import MaskedAccess
from pipeline.compute.allocation import AllocationIntent, Attempt
from pipeline.compute.catalog import Offer
from pipeline.compute.optimizer import Decision, TenantPolicy, TenantUsage
from pipeline.compute.request import ComputeRequest


class ComputeState(StrEnum):
    REQUESTED = "requested"
    ALLOCATING = "allocating"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"


S = ComputeState

#: Legal transitions. ``provisioning -> allocating`` is a failover after a machine failed to boot;
#: ``requested -> terminated`` is a cancellation before anything was allocated.
TRANSITIONS: dict[ComputeState, frozenset[ComputeState]] = {
    S.REQUESTED: frozenset({S.ALLOCATING, S.TERMINATED, S.FAILED}),
    S.ALLOCATING: frozenset({S.PROVISIONING, S.TERMINATING, S.FAILED}),
    S.PROVISIONING: frozenset({S.RUNNING, S.ALLOCATING, S.TERMINATING, S.FAILED}),
    S.RUNNING: frozenset({S.TERMINATING, S.FAILED}),
    S.TERMINATING: frozenset({S.TERMINATED, S.FAILED}),
    S.TERMINATED: frozenset(),
    S.FAILED: frozenset(),
}

TERMINAL = frozenset({S.TERMINATED, S.FAILED})
#: States in which an allocation may exist at a backend (capacity held, quota used, money spent).
HOLDING = frozenset({S.PROVISIONING, S.RUNNING, S.TERMINATING})


class IllegalTransition(ValueError):
    def __init__(self, request_id: str, source: ComputeState, target: ComputeState) -> None:
        super().__init__(f"{request_id}: illegal transition {source.value} -> {target.value}")
        self.source = source
        self.target = target


class TerminationReason(StrEnum):
    DURATION_ELAPSED = "duration_elapsed"
    IDLE = "idle"
    USER = "user"
    CANCELLED = "cancelled"
    ALLOCATION_FAILED = "allocation_failed"
    MACHINE_FAILED = "machine_failed"


class StateChange(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    state: ComputeState
    at: AwareDatetime
    reason: str | None = None


class ReservationTerms(BaseModel):
    """What an accepted reservation (``start_at`` later than its acceptance) holds until it starts or is
    cancelled; shown with the record (status endpoint). The derivatives engine has no capacity hold
    (docs/compute.md, "Reservations"): quota and budget are held, capacity is not."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    start_at: AwareDatetime
    accepted_at: AwareDatetime
    quota_held: bool = Field(
        default=True, description="The requested resources count against the tenant's quota from acceptance."
    )
    budget_held_usd: float = Field(
        ge=0, description="The total of the offer chosen at acceptance, counted as committed against the budget."
    )
    capacity_held: bool = Field(default=False, description="Capacity is not held by the provider.")
    guarantee: str


def reservation_terms(start_at: datetime, accepted_at: datetime, budget_held_usd: float) -> ReservationTerms:
    return ReservationTerms(
        start_at=start_at,
        accepted_at=accepted_at,
        budget_held_usd=budget_held_usd,
        guarantee=(
            "Held from acceptance until the start or a cancellation: the requested resources against the "
            f"tenant's quota and {budget_held_usd:.2f} USD (the offer chosen at acceptance) against its budget. "
            "Capacity is not held (the providers offer no hold): it was checked at acceptance, and at start_at "
            "the offer is chosen again from the current offers, with failover; a reservation that cannot start "
            "before its whole duration has passed fails (reservation_missed)."
        ),
    )


class ComputeRecord(BaseModel):
    """The stored record of one request (changelog table value; status endpoint body). No secrets."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    request_id: str
    tenant_id: str
    request: ComputeRequest
    #: ``request.fingerprint()`` when the record was created: a retried POST with the same Idempotency-Key
    #: or request_name must carry the same body (``None`` in records written before it existed).
    request_hash: str | None = None
    state: ComputeState = ComputeState.REQUESTED
    created_at: AwareDatetime
    updated_at: AwareDatetime
    history: list[StateChange] = Field(default_factory=list)
    decision: Decision | None = None
    offer: Offer | None = None
    price_per_hour: float | None = None
    allocation_id: str | None = None
    client_token: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    #: Every attempt's token, recorded before its backend call (what recovery releases after a crash).
    intents: list[AllocationIntent] = Field(default_factory=list)
    access: MaskedAccess | None = None
    running_since: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    last_active_at: AwareDatetime | None = None
    #: The latest ``resource-metrics`` sample of this allocation (``workload`` = request id); ``None``: never
    #: observed, so never idle.
    last_sample_at: AwareDatetime | None = None
    #: When the ``idle-warning`` of the current idle stretch was announced.
    idle_warned_at: AwareDatetime | None = None
    termination_reason: TerminationReason | None = None
    #: Set when the request was accepted as a reservation (``start_at`` later): what it holds meanwhile.
    reservation: ReservationTerms | None = None
    error: str | None = None
    unreleased_tokens: list[str] = Field(default_factory=list)

    @classmethod
    def new(cls, request_id: str, request: ComputeRequest, now: datetime) -> ComputeRecord:
        _aware(now)
        return cls(
            request_id=request_id,
            tenant_id=request.tenant_id,
            request=request,
            request_hash=request.fingerprint(),
            created_at=now,
            updated_at=now,
            history=[StateChange(state=ComputeState.REQUESTED, at=now)],
        )

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def gpus_held(self) -> int:
        """GPUs this record counts against the tenant's quota: the offer's while holding, the requested
        ones while ``allocating`` (so that concurrent requests of a tenant cannot both pass the check)."""
        if self.state is ComputeState.ALLOCATING:
            return self.request.resources.gpu_count
        return self.offer.gpu_count if self.offer is not None and self.state in HOLDING else 0

    def cost_usd(self, now: datetime) -> float:
        """Spend of this record: committed while unfinished (the best candidate's total while
        ``allocating``, price x full duration while holding), the time actually run once finished
        (capped at the duration; nothing if it never ran)."""
        if self.state is ComputeState.ALLOCATING:
            chosen = self.decision.chosen if self.decision is not None else None
            return chosen.total_cost if chosen is not None else 0.0
        if self.price_per_hour is None:
            return 0.0
        hours = self.request.duration_hours
        if self.state in TERMINAL:
            if self.running_since is None:
                return 0.0
            end = self.finished_at or now
            hours = min(hours, max((end - self.running_since).total_seconds(), 0.0) / 3600.0)
        return self.price_per_hour * hours


def _aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("timezone-aware datetime required")


def transition(
    record: ComputeRecord,
    target: ComputeState,
    now: datetime,
    *,
    reason: str | None = None,
    **changes: object,
) -> ComputeRecord:
    """A copy of ``record`` in ``target`` state with ``changes`` applied; raises :class:`IllegalTransition`.

    Sets ``running_since``/``ends_at`` on entering ``running`` and ``finished_at`` on a terminal state.
    """
    _aware(now)
    if target not in TRANSITIONS[record.state]:
        raise IllegalTransition(record.request_id, record.state, target)
    unknown = set(changes) - set(ComputeRecord.model_fields)
    if unknown:
        raise ValueError(f"unknown record fields {sorted(unknown)}")
    update: dict[str, object] = dict(changes)
    update["state"] = target
    update["updated_at"] = now
    update["history"] = [*record.history, StateChange(state=target, at=now, reason=reason)]
    if target is ComputeState.RUNNING:
        update.setdefault("running_since", now)
        start = update["running_since"]
        assert isinstance(start, datetime)
        update.setdefault("ends_at", start + timedelta(hours=record.request.duration_hours))
        update.setdefault("last_active_at", start)
    if target in TERMINAL:
        update.setdefault("finished_at", now)
    return ComputeRecord.model_validate({**record.model_dump(), **update})


class IdlePolicy(BaseModel):
    """The service-wide part of idle termination: how long before acting the ``idle-warning`` is announced
    (``COMPUTE_IDLE_WARNING_SECONDS``). Whether and when a request is idle is the request's own
    :class:`~pipeline.compute.request.IdleTermination` (opt-in)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    warning_grace_s: float = Field(default=600.0, gt=0, le=86400)


class IdleStep(StrEnum):
    WARN = "idle-warning"
    TERMINATE = "terminate"


def last_active(
    previous: datetime | None, utilization: float, at: datetime, below_utilization: float
) -> datetime | None:
    """New "last busy" time after a utilization sample taken ``at`` (pure): a sample at or above the
    request's ``below_utilization`` is busy."""
    if utilization >= below_utilization and (previous is None or at > previous):
        return at
    return previous


def idle_since(record: ComputeRecord) -> datetime | None:
    """Start of the idle stretch *observed* for a running record (pure): the later of the start of running and
    the last busy sample, when a sample (necessarily idle) was observed after it; else ``None`` (no sample
    at all, or the last one was busy: nothing says the machine is idle)."""
    if record.state is not ComputeState.RUNNING or record.running_since is None or record.last_sample_at is None:
        return None
    since = max(d for d in (record.running_since, record.last_active_at) if d is not None)
    return since if record.last_sample_at > since else None


def idle_step(record: ComputeRecord, now: datetime, grace_s: float) -> IdleStep | None:
    """What idle termination must do now for ``record`` (pure), only for a request that opted in
    (``request.idle_termination``) and only on observed samples:

    * ``WARN`` once idle has been observed for ``after_minutes`` minus ``grace_s`` (at once when the window is
      shorter than the grace) and no warning was given for this idle stretch;
    * ``TERMINATE`` once idle has been observed (first to last sample) for the whole ``after_minutes`` and
      the warning of this stretch is at least ``grace_s`` old;
    * ``None`` otherwise. A busy sample starts a new stretch (the old warning no longer counts); samples
      that stop arriving stop the observed stretch from growing, so missing metrics never terminate."""
    _aware(now)
    policy = record.request.idle_termination
    since = idle_since(record)
    if policy is None or since is None or record.last_sample_at is None:
        return None
    observed = (min(record.last_sample_at, now) - since).total_seconds()
    window = policy.after_minutes * 60.0
    warned_at = record.idle_warned_at
    if warned_at is None or warned_at < since:
        return IdleStep.WARN if observed >= max(window - grace_s, 0.0) else None
    if observed >= window and (now - warned_at).total_seconds() >= grace_s:
        return IdleStep.TERMINATE
    return None


def termination_due(record: ComputeRecord, now: datetime) -> TerminationReason | None:
    """Whether a running allocation must be terminated now because its duration has elapsed (pure). Idle
    termination is :func:`idle_step` (opt-in, warned first)."""
    _aware(now)
    if record.state is not ComputeState.RUNNING or record.running_since is None:
        return None
    ends_at = record.ends_at or record.running_since + timedelta(hours=record.request.duration_hours)
    if now >= ends_at:
        return TerminationReason.DURATION_ELAPSED
    return None


def tenant_usage(records: Iterable[ComputeRecord], tenant_id: str, now: datetime) -> TenantUsage:
    """GPUs held and spend (committed for holding records, actual for finished ones) of a tenant."""
    gpus, spent = 0, 0.0
    for record in records:
        if record.tenant_id != tenant_id:
            continue
        gpus += record.gpus_held
        spent += record.cost_usd(now)
    return TenantUsage(gpus_in_use=gpus, spent_usd=spent)


class ComputeHeld(BaseModel):
    """What a tenant's compute allocations hold now: the machines allocated at a provider (records in
    ``HOLDING``: provisioning, running, or being released), counted as the machines are (GPUs, vCPUs and memory
    of the chosen offer), for the usage the quota view and the dashboard show."""

    tenant_id: str
    allocations: int = 0
    gpus: float = 0.0
    cpu_cores: float = 0.0
    memory_gib: float = 0.0
    request_ids: list[str] = Field(default_factory=list)
    """The requests counted: a ``resource-metrics`` workload of that name is the same machine's utilization."""


def held_by(records: Iterable[ComputeRecord], tenant_id: str) -> ComputeHeld:
    """:class:`ComputeHeld` of ``tenant_id`` over ``records`` (any tenants', any states)."""
    held = ComputeHeld(tenant_id=tenant_id)
    for record in records:
        if record.tenant_id != tenant_id or record.state not in HOLDING:
            continue
        offer, asked = record.offer, record.request.resources
        held.allocations += 1
        held.gpus += offer.gpu_count if offer is not None else asked.gpu_count
        held.cpu_cores += offer.vcpus if offer is not None else asked.vcpus
        held.memory_gib += offer.memory_gib if offer is not None else asked.memory_gib
        held.request_ids.append(record.request_id)
    held.request_ids.sort()
    return held


class CapacityRow(BaseModel):
    """Capacity of one (provider, region, resource type); ``None`` where the capacity is unknown."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    provider: str
    region: str
    resource_type: str
    pools: int
    capacity_instances: int | None
    allocated_instances: int
    available_instances: int | None
    available_gpus: int | None
    available_vcpus: float | None


class TenantQuotaView(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    tenant_id: str
    max_gpus: int | None
    gpus_in_use: int
    gpus_remaining: int | None
    max_price_per_hour: float | None
    budget_usd: float | None
    spent_usd: float
    budget_remaining_usd: float | None


class CapacityView(BaseModel):
    """Body of ``GET /api/v1/compute/capacity``."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    generated_at: AwareDatetime
    rows: list[CapacityRow]
    tenant: TenantQuotaView | None = None


def capacity_view(
    offers: Sequence[Offer] | Iterable[Offer],
    records: Iterable[ComputeRecord],
    now: datetime,
    *,
    tenant: TenantPolicy | None = None,
    usage: TenantUsage | None = None,
) -> CapacityView:
    """Available capacity = pool capacity (from offers: engine quotes, Kubernetes config) minus the
    pools' allocations held by current records; plus the tenant's remaining quota and budget (``usage``:
    the tenant's usage as the service counts it, reservations included; default :func:`tenant_usage`)."""
    _aware(now)
    records = list(records)
    pools: dict[tuple[str, str, str], tuple[Offer, int | None]] = {}
    for offer in offers:
        key = offer.pool_key
        known = pools.get(key)
        capacity = offer.capacity
        if known is not None and known[1] is not None:
            capacity = known[1] if capacity is None else max(capacity, known[1])
        pools[key] = (known[0] if known is not None else offer, capacity)
    held: dict[tuple[str, str, str], int] = {}
    for record in records:
        if record.offer is not None and record.state in HOLDING:
            held[record.offer.pool_key] = held.get(record.offer.pool_key, 0) + 1
    groups: dict[tuple[str, str, str], list[tuple[Offer, int | None, int]]] = {}
    for key, (offer, capacity) in pools.items():
        group = (offer.provider, offer.region, offer.resource_type)
        groups.setdefault(group, []).append((offer, capacity, held.get(key, 0)))
    rows = []
    for (provider, region, resource_type), members in sorted(groups.items()):
        allocated = sum(h for _, _, h in members)
        if all(capacity is not None for _, capacity, _ in members):
            free = [(o, max((c or 0) - h, 0)) for o, c, h in members]
            rows.append(
                CapacityRow(
                    provider=provider,
                    region=region,
                    resource_type=resource_type,
                    pools=len(members),
                    capacity_instances=sum(c or 0 for _, c, _ in members),
                    allocated_instances=allocated,
                    available_instances=sum(n for _, n in free),
                    available_gpus=sum(o.gpu_count * n for o, n in free),
                    available_vcpus=sum(o.vcpus * n for o, n in free),
                )
            )
        else:
            rows.append(
                CapacityRow(
                    provider=provider,
                    region=region,
                    resource_type=resource_type,
                    pools=len(members),
                    capacity_instances=None,
                    allocated_instances=allocated,
                    available_instances=None,
                    available_gpus=None,
                    available_vcpus=None,
                )
            )
    quota = None
    if tenant is not None:
        usage = usage or tenant_usage(records, tenant.tenant_id, now)
        quota = TenantQuotaView(
            tenant_id=tenant.tenant_id,
            max_gpus=tenant.max_gpus,
            gpus_in_use=usage.gpus_in_use,
            gpus_remaining=None if tenant.max_gpus is None else max(tenant.max_gpus - usage.gpus_in_use, 0),
            max_price_per_hour=tenant.max_price_per_hour,
            budget_usd=tenant.budget_usd,
            spent_usd=usage.spent_usd,
            budget_remaining_usd=None if tenant.budget_usd is None else tenant.budget_usd - usage.spent_usd,
        )
    return CapacityView(generated_at=now, rows=rows, tenant=quota)


class ComputeEvent(BaseModel):
    """Payload announced on ``provisioning-events`` for every state change (no secrets)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    kind: str = "compute"
    request_id: str
    tenant_id: str
    state: ComputeState
    at: AwareDatetime
    reason: str | None = None
    offer_id: str | None = None
    allocation_id: str | None = None
    attempts: int = 0
    access: MaskedAccess | None = None
    error: str | None = None
    #: ``idle-warning``: not a state change but the notice that idle termination will follow.
    notice: IdleStep | None = None
    idle_since: AwareDatetime | None = None
    terminate_not_before: AwareDatetime | None = None


def event_for(record: ComputeRecord) -> ComputeEvent:
    last = record.history[-1] if record.history else None
    return ComputeEvent(
        request_id=record.request_id,
        tenant_id=record.tenant_id,
        state=record.state,
        at=record.updated_at,
        reason=last.reason if last else None,
        offer_id=record.offer.offer_id if record.offer else None,
        allocation_id=record.allocation_id,
        attempts=len(record.attempts),
        access=record.access,
        error=record.error,
    )


def idle_warning_event(record: ComputeRecord, now: datetime, grace_s: float) -> ComputeEvent:
    """The ``idle-warning`` notice of ``record``'s current idle stretch (its id is derived from the stretch's
    start, so a redelivered or repeated warning is the same event)."""
    since = idle_since(record)
    policy = record.request.idle_termination
    not_before = None
    if since is not None and policy is not None:
        not_before = max(since + timedelta(minutes=policy.after_minutes), now + timedelta(seconds=grace_s))
    return event_for(record).model_copy(
        update={"at": now, "notice": IdleStep.WARN, "idle_since": since, "terminate_not_before": not_before,
                "reason": TerminationReason.IDLE.value}
    )
