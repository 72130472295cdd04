"""The orchestration the agents and REST routes call: decide, allocate with failover, access, lifecycle.

:class:`ComputeService` keeps records in a ``RecordStore`` (a Faust changelog table, or a dict in tests)
and announces every state change through an async ``EventSink`` (``provisioning-events``). Records and
events never contain secrets; :meth:`ComputeService.provision` returns the :class:`AccessDetails` with
the private key and Jupyter token once, for the response to the requester.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pipeline.compute.access import AccessConfig, AccessDetails, AccessSecrets
from pipeline.compute.allocation import (
    AllocationIntent,
    FailoverPolicy,
    IntentState,
    allocate_with_failover,
    settle_intents,
    token_prefix,
)
from pipeline.compute.backend import AllocationHandle, BackendError, BackendRouter, ComputeBackend
from pipeline.compute.catalog import Offer, OfferBook
from pipeline.compute.costs import tenant_costs
from pipeline.compute.lifecycle import (
    HOLDING,
    CapacityView,
    ComputeEvent,
    ComputeRecord,
    ComputeState,
    IdlePolicy,
    IdleStep,
    TerminationReason,
    capacity_view,
    event_for,
    idle_step,
    idle_warning_event,
    last_active,
    reservation_terms,
    tenant_usage,
    termination_due,
    transition,
)
from pipeline.compute.optimizer import Decision, FailureHistory, NoFeasibleOffer, TenantPolicy, TenantUsage, choose
from pipeline.compute.quota import ComputeQuotaRefused, admit
from pipeline.compute.quote_cache import QuoteSource
from pipeline.compute.request import ComputeRequest
from pipeline.isolation import isolated
from pipeline.metrics import COMPUTE_ATTEMPTS, COMPUTE_RECOVERED
from pipeline.tenants.models import QuotaRecord

__all__ = ["ComputeService", "ProvisionResult", "RecordStore", "UnknownRequest", "token_prefix"]

logger = logging.getLogger(__name__)

EventSink = Callable[[ComputeEvent], Awaitable[None]]
QuotaLookup = Callable[[str], QuotaRecord | None]


class RecordStore(Protocol):
    """What the service needs from the table (a ``dict`` or a Faust table wrapper)."""

    def get(self, key: str, /) -> ComputeRecord | None: ...

    def __setitem__(self, key: str, value: ComputeRecord, /) -> None: ...

    def values(self) -> Iterable[ComputeRecord]: ...


class UnknownRequest(KeyError):
    """No record for this request id (REST: 404)."""


@dataclass(frozen=True)
class ProvisionResult:
    """The stored record, and (when running) the access details WITH secrets, to return once."""

    record: ComputeRecord
    access: AccessDetails | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def usage_of(records: Iterable[ComputeRecord], tenant_id: str, now: datetime) -> TenantUsage:
    """GPUs held, and spent + committed as the costs module counts them (accepted reservations included)."""
    records = list(records)
    gpus = tenant_usage(records, tenant_id, now).gpus_in_use
    costs = tenant_costs(records, tenant_id, now, budget_usd=None, period="total")
    return TenantUsage(gpus_in_use=gpus, spent_usd=costs.used_usd)


#: Intents that may still hold capacity at a backend.
_OPEN_INTENTS = frozenset({IntentState.ALLOCATING, IntentState.UNRELEASED})


class ComputeService:
    """Compute provisioning for all tenants. All methods take/return JSON-serialisable pydantic models."""

    def __init__(
        self,
        *,
        book: OfferBook,
        backends: BackendRouter,
        store: RecordStore,
        policies: Mapping[str, TenantPolicy] | Callable[[str], TenantPolicy] | None = None,
        failover: FailoverPolicy | None = None,
        access_config: AccessConfig | None = None,
        idle: IdlePolicy | None = None,
        events: EventSink | None = None,
        failures: FailureHistory | None = None,
        max_candidates: int = 50,
        clock: Callable[[], datetime] = _utcnow,
        period_start: Callable[[datetime], datetime] | None = None,
        quotas: QuotaLookup | None = None,
        quarantined: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.book = book
        self.backends = backends
        self.store = store
        self._policies = policies
        self.failover = failover or FailoverPolicy()
        self.access_config = access_config or AccessConfig()
        self.idle = idle or IdlePolicy()
        self._events = events
        self.failures = failures if failures is not None else FailureHistory()
        self.max_candidates = max_candidates
        self.clock = clock
        self.period_start = period_start
        self.quotas = quotas
        """The tenants' quota records; ``None``: no quota admission (tests of the other parts only)."""
        self.quarantined = quarantined
        """The tenant's quarantined workloads (none refuse nothing); ``None``: not checked."""
        self._inflight: dict[str, asyncio.Task[ProvisionResult]] = {}
        self._terminate_requested: set[str] = set()

    # ----- helpers -----

    def policy(self, tenant_id: str) -> TenantPolicy:
        if self._policies is None:
            return TenantPolicy(tenant_id=tenant_id)
        if callable(self._policies):
            return self._policies(tenant_id)
        return self._policies.get(tenant_id) or TenantPolicy(tenant_id=tenant_id)

    def records(self) -> Iterator[ComputeRecord]:
        return iter(list(self.store.values()))

    def usage_records(self, now: datetime) -> list[ComputeRecord]:
        """The records that count against quota and budget at ``now``: all of them, or (with a budget
        ``period_start``) the unfinished ones and those finished since the period started."""
        records = list(self.records())
        if self.period_start is None:
            return records
        since = self.period_start(now)
        return [r for r in records if not r.terminal or (r.finished_at or r.updated_at) >= since]

    def inflight(self, request_id: str) -> bool:
        """Whether this service is allocating ``request_id`` right now."""
        return request_id in self._inflight

    def get(self, request_id: str) -> ComputeRecord:
        record = self.store.get(request_id)
        if record is None:
            raise UnknownRequest(request_id)
        return record

    async def _save(self, record: ComputeRecord) -> ComputeRecord:
        self.store[record.request_id] = record
        if self._events is not None:
            await self._events(event_for(record))
        return record

    async def _persist(self, record: ComputeRecord) -> ComputeRecord:
        """Store ``record`` and wait until it is durable (the worker's store sends it to the changelog's
        topic and raises if it could not); a plain dict store is durable at once."""
        persist = getattr(self.store, "persist", None)
        if persist is not None:
            await persist(record)
        else:
            self.store[record.request_id] = record
        return record

    async def refresh_offers(self, engine: QuoteSource) -> int:
        """Merge the engine's current quote (wholesale prices, availability) into the offer book (``engine``: the
        client, or the workers' shared cache of its quotes in front of it)."""
        quote = await engine.quote()
        self.book.merge(quote.offers)
        return len(quote.offers)

    # ----- decision -----

    def usage(self, tenant_id: str, now: datetime, *, exclude: str | None = None) -> TenantUsage:
        """What the optimizer checks ``tenant_id``'s next request against: GPUs held and money spent plus
        committed, accepted reservations included (their total as accepted), by the costs module's own
        figures (:func:`pipeline.compute.costs.tenant_costs`). ``exclude``: the request being started, whose
        reservation must not count against itself."""
        return usage_of((r for r in self.usage_records(now) if r.request_id != exclude), tenant_id, now)

    def decide(self, request: ComputeRequest, now: datetime | None = None, *, exclude: str | None = None) -> Decision:
        now = now or self.clock()
        usage = self.usage(request.tenant_id, now, exclude=exclude)
        return choose(
            request,
            self.book,
            policy=self.policy(request.tenant_id),
            usage=usage,
            failures=self.failures,
            now=now,
            max_candidates=self.max_candidates,
        )

    def admission(self, request: ComputeRequest) -> None:
        """Raise :class:`ComputeQuotaRefused` unless the tenant's quota admits ``request`` on top of its
        live requests (:func:`pipeline.compute.quota.admit`)."""
        if self.quotas is None:
            return
        quarantined = self.quarantined(request.tenant_id) if self.quarantined is not None else ()
        refusal = admit(request, self.records(), self.quotas(request.tenant_id), quarantined)
        if refusal is not None:
            raise ComputeQuotaRefused(refusal)

    async def submit(self, request_id: str, request: ComputeRequest) -> ComputeRecord:
        """Store a new request with its decision. Raises :class:`ComputeQuotaRefused` (nothing stored)
        when the tenant's quota does not admit it, :class:`NoFeasibleOffer` (422) after storing it as
        ``failed`` with the explanation, and ``ValueError`` for a duplicate request id.

        Nothing awaits between the admission and the store, so concurrent requests of a tenant see each
        other's records."""
        if self.store.get(request_id) is not None:
            raise ValueError(f"request {request_id} exists")
        self.admission(request)
        now = self.clock()
        record = ComputeRecord.new(request_id, request, now)
        decision = self.decide(request, now)
        if not decision.feasible:
            failed = transition(
                record, ComputeState.FAILED, now, reason="no_feasible_offer", decision=decision, error=decision.message
            )
            await self._save(failed)
            raise NoFeasibleOffer(decision)
        update: dict[str, object] = {"decision": decision}
        if request.start_at is not None and request.starts_after(now) and decision.chosen is not None:
            # accepted as a reservation: from now on it counts against quota (quota.in_use counts every
            # unfinished record) and budget (costs.split counts its chosen total as committed)
            update["reservation"] = reservation_terms(request.start_at, now, decision.chosen.total_cost)
        return await self._save(record.model_copy(update=update))

    # ----- allocation -----

    async def start(self, request_id: str) -> ProvisionResult:
        """Allocate a submitted request (re-deciding with current offers and usage) until running or
        failed. Returns the access details with secrets once. The allocation runs in its own task:
        :meth:`terminate` meanwhile cancels it (releasing the in-flight attempt) and this returns the
        ``terminated`` record; cancelling the caller cancels and releases it too, then re-raises."""
        record = self.get(request_id)
        if record.state is not ComputeState.REQUESTED or request_id in self._inflight:
            raise ValueError(f"request {request_id} is {record.state.value}, not requested")
        inner: asyncio.Task[ProvisionResult] = asyncio.create_task(self._start(record))
        self._inflight[request_id] = inner
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if inner.done() and inner.cancelled():  # cancelled by terminate()
                return ProvisionResult(self.get(request_id))
            inner.cancel()  # our caller was cancelled: stop and release, then propagate
            await asyncio.wait([inner])
            raise
        finally:
            self._inflight.pop(request_id, None)

    async def _start(self, record: ComputeRecord) -> ProvisionResult:
        request = record.request
        decision = self.decide(request, exclude=record.request_id)  # its own reservation is what it starts
        if not decision.feasible:
            failed = transition(
                record, ComputeState.FAILED, self.clock(), reason="no_feasible_offer",
                decision=decision, error=decision.message,
            )
            await self._save(failed)
            raise NoFeasibleOffer(decision)
        prices = {c.offer_id: c.price_per_hour for c in decision.candidates}
        offers = [o for o in (self.book.get(c.offer_id) for c in decision.candidates) if o is not None]
        current = await self._save(transition(record, ComputeState.ALLOCATING, self.clock(), decision=decision))
        secrets = AccessSecrets.generate(comment=f"{request.tenant_id}-{record.request_id}")

        async def on_allocated(offer: Offer, handle: AllocationHandle) -> None:
            nonlocal current
            now = self.clock()
            if current.state is ComputeState.PROVISIONING:  # the previous machine failed to boot
                current = transition(current, ComputeState.ALLOCATING, now, reason="failover")
            current = await self._save(
                transition(
                    current, ComputeState.PROVISIONING, now, offer=offer, allocation_id=handle.allocation_id,
                    client_token=handle.client_token, price_per_hour=prices.get(offer.offer_id),
                )
            )

        async def on_intent(intent: AllocationIntent) -> None:
            nonlocal current
            current = await self._persist(current.model_copy(update={"intents": [*current.intents, intent]}))

        try:
            result = await allocate_with_failover(
                request, offers, self.backends, secrets.setup(), policy=self.failover,
                history=self.failures, on_allocated=on_allocated, request_id=record.request_id,
                on_intent=on_intent,
            )
        except asyncio.CancelledError:
            secrets.forget()
            user = record.request_id in self._terminate_requested
            now = self.clock()
            if user:
                if current.state is not ComputeState.TERMINATING:
                    current = transition(current, ComputeState.TERMINATING, now, reason=TerminationReason.USER.value,
                                         termination_reason=TerminationReason.USER)
                final = transition(current, ComputeState.TERMINATED, now, reason=TerminationReason.USER.value)
            else:
                final = transition(current, ComputeState.FAILED, now, reason=TerminationReason.CANCELLED.value,
                                   error="allocation cancelled", termination_reason=TerminationReason.CANCELLED)
            await self._save(final)
            raise
        for attempt in result.attempts:
            COMPUTE_ATTEMPTS.labels(attempt.provider, attempt.outcome.value).inc()
        now = self.clock()
        if not result.ok or result.allocation is None or result.offer is None:
            secrets.forget()
            final = transition(
                current, ComputeState.FAILED, now, reason=TerminationReason.ALLOCATION_FAILED.value,
                attempts=result.attempts, error=result.error, unreleased_tokens=result.unreleased,
                termination_reason=TerminationReason.ALLOCATION_FAILED,
                intents=settle_intents(current.intents, result.attempts),
            )
            await self._save(final)
            return ProvisionResult(final)
        handle = result.allocation
        access = AccessDetails.build(
            secrets, allocation_id=handle.allocation_id, request_id=record.request_id,
            host=handle.host, port=handle.ssh_port, config=self.access_config,
        )
        running = transition(
            current, ComputeState.RUNNING, now, attempts=result.attempts, access=access.public_view(),
            offer=result.offer, allocation_id=handle.allocation_id, client_token=handle.client_token,
            price_per_hour=prices.get(result.offer.offer_id), unreleased_tokens=result.unreleased,
            intents=settle_intents(current.intents, result.attempts, handle.client_token),
        )
        try:
            return ProvisionResult(await self._save(running), access)
        except asyncio.CancelledError:
            # the requester will never see the access details: do not keep paying for the machine
            await self._abandon(running, record.request_id in self._terminate_requested)
            raise

    async def _abandon(self, record: ComputeRecord, by_user: bool) -> None:
        """Release a running allocation whose provisioning was cancelled (shielded from cancellation)."""
        reason = TerminationReason.USER if by_user else TerminationReason.CANCELLED
        terminating = transition(
            record, ComputeState.TERMINATING, self.clock(), reason=reason.value, termination_reason=reason
        )
        self.store[record.request_id] = terminating
        if record.offer is None or record.allocation_id is None:  # pragma: no cover - running implies both
            return
        release = asyncio.ensure_future(self.backends.for_offer(record.offer).release(record.allocation_id))
        try:
            await asyncio.shield(release)
        except BackendError as exc:
            logger.error("release of %s failed: %s", record.allocation_id, exc)
            return  # stays terminating: enforce() retries
        self.store[record.request_id] = transition(terminating, ComputeState.TERMINATED, self.clock(),
                                                   reason=reason.value)

    async def provision(self, request_id: str, request: ComputeRequest) -> ProvisionResult:
        """``submit`` then, unless ``start_at`` is in the future (a reservation the scheduler starts
        later with :meth:`start`), ``start``."""
        record = await self.submit(request_id, request)
        if request.starts_after(self.clock()):
            return ProvisionResult(record)
        return await self.start(request_id)

    # ----- termination -----

    async def terminate(self, request_id: str, reason: TerminationReason = TerminationReason.USER) -> ComputeRecord:
        """Terminate and release (``DELETE``). Idempotent on terminal records. A release that fails leaves
        the record ``terminating`` with the error; :meth:`enforce` retries it."""
        record = self.get(request_id)
        if record.terminal:
            return record
        if record.state is ComputeState.REQUESTED:
            return await self._save(
                transition(
                    record, ComputeState.TERMINATED, self.clock(), reason=reason.value, termination_reason=reason
                )
            )
        task = self._inflight.get(request_id)
        if task is not None:
            self._terminate_requested.add(request_id)
            task.cancel()
            try:
                await asyncio.wait([task])  # the task's own outcome (CancelledError) stays with its caller
            finally:
                self._terminate_requested.discard(request_id)
            return self.get(request_id)
        if record.state is not ComputeState.TERMINATING:
            record = await self._save(
                transition(
                    record, ComputeState.TERMINATING, self.clock(), reason=reason.value, termination_reason=reason
                )
            )
        if record.allocation_id is not None and record.offer is not None:
            backend = self.backends.for_offer(record.offer)
            try:
                await backend.release(record.allocation_id)
            except BackendError as exc:
                logger.error("release of %s failed: %s", record.allocation_id, exc)
                failed = record.model_copy(update={"error": f"release failed: {exc}", "updated_at": self.clock()})
                return await self._save(failed)
        final_reason = record.termination_reason or reason
        return await self._save(transition(record, ComputeState.TERMINATED, self.clock(), reason=final_reason.value))

    async def fail_abandoned(
        self, request_id: str, reason: str = "abandoned", error: str | None = None
    ) -> ComputeRecord:
        """Fail a request that nothing is working on any more (its worker stopped in the middle of the
        allocation, or a reservation whose time passed): release what the record knows of (the client
        token and allocation id of its last attempt), then ``failed``. In flight here, running,
        terminating or finished records are returned unchanged, and so is the record when the release
        fails (the next sweep retries)."""
        record = self.get(request_id)
        if record.terminal or record.state in (ComputeState.RUNNING, ComputeState.TERMINATING):
            return record
        if request_id in self._inflight:
            return record
        try:
            intents = await self._release_intents(record, every=True)
            if record.offer is not None and (record.client_token or record.allocation_id):
                backend = self.backends.for_offer(record.offer)
                if record.client_token:
                    await backend.release_by_token(record.client_token)
                if record.allocation_id:
                    await backend.release(record.allocation_id)
        except BackendError as exc:
            logger.error("release of abandoned %s failed: %s", request_id, exc)
            return record
        message = error or f"abandoned in state {record.state.value}: nothing was allocating it any more"
        return await self._save(
            transition(
                record, ComputeState.FAILED, self.clock(), reason=reason, error=message,
                termination_reason=TerminationReason.CANCELLED, intents=intents,
            )
        )

    async def _release_intents(
        self, record: ComputeRecord, *, every: bool = False, kind: str = "abandoned"
    ) -> list[AllocationIntent]:
        """Release by token every intent of ``record`` that may hold capacity (``every``: also ``held``
        ones), at the backend of its provider; the intents marked ``released``. A failed release raises
        :class:`BackendError` (nothing is marked; releases are idempotent, the next sweep retries)."""
        settled = []
        for intent in record.intents:
            if intent.state in _OPEN_INTENTS or (every and intent.state is IntentState.HELD):
                await self.backends.for_provider(intent.provider).release_by_token(intent.client_token)
                COMPUTE_RECOVERED.labels(intent.provider, kind).inc()
                logger.info("released %s's token %s (%s, recorded as %s)", record.request_id, intent.client_token,
                            intent.provider, intent.state.value)
                intent = intent.model_copy(update={"state": IntentState.RELEASED})
            settled.append(intent)
        return settled

    async def release_leftovers(self) -> list[ComputeRecord]:
        """Release what finished records may still hold: intents left ``allocating`` (the worker was
        killed, or the run was cancelled, during an attempt) or ``unreleased``, and ``unreleased_tokens``.
        Returns the records it updated; one whose release fails stays as it is (the next sweep retries)."""
        changed = []
        for record in self.records():
            if not record.terminal:
                continue
            open_intents = any(i.state in _OPEN_INTENTS for i in record.intents)
            if not open_intents and not record.unreleased_tokens:
                continue
            with isolated("compute-release", record.request_id):
                try:
                    intents = await self._release_intents(record, kind="leftover")
                    backend = self.backends.for_offer(record.offer) if record.offer is not None else None
                    for token in record.unreleased_tokens:
                        await (backend or self.backends.default).release_by_token(token)
                except BackendError as exc:
                    logger.error("release of %s's leftover tokens failed: %s", record.request_id, exc)
                    continue
                updated = record.model_copy(update={"intents": intents, "unreleased_tokens": [],
                                                    "updated_at": max(self.clock(), record.updated_at)})
                self.store[record.request_id] = updated  # no state change: nothing to announce
                changed.append(updated)
        return changed

    def live_tokens(self) -> tuple[set[str], set[str]]:
        """The tenants this service has records of, and the client tokens (lower case) that may hold
        capacity on purpose: those of unfinished records (their intents not released, their current
        allocation). Anything else a provider holds for those tenants is an orphan."""
        tenants: set[str] = set()
        live: set[str] = set()
        for record in self.records():
            tenants.add(record.tenant_id)
            if record.terminal:
                continue
            live.update(i.client_token.lower() for i in record.intents if i.state is not IntentState.RELEASED)
            if record.client_token:
                live.add(record.client_token.lower())
        return tenants, live

    async def release_orphans(
        self, provider: str, backend: ComputeBackend, now: datetime, grace_s: float
    ) -> list[str]:
        """Delete what ``backend`` (a provider that can list its allocations: ``list_allocations``) holds
        for a tenant of this service without a live token, created more than ``grace_s`` before ``now``.
        The provider is asked (by label), never an in-memory list of what it created. Returns the tokens
        released."""
        lister = getattr(backend, "list_allocations", None)
        if lister is None:
            return []
        tenants, live = self.live_tokens()
        if not tenants:  # only tenants with records here are compared: nothing to ask the provider about
            return []
        released = []
        for found in await lister():
            if found.tenant_id not in tenants or found.client_token in live:
                continue
            if found.created_at is not None and (now - found.created_at).total_seconds() < grace_s:
                continue
            with isolated("compute-orphans", found.client_token):
                logger.warning("releasing orphan allocation %s of %s (token %s)", found.allocation_id,
                               found.tenant_id, found.client_token)
                await backend.release_by_token(found.client_token)
                COMPUTE_RECOVERED.labels(provider, "orphan").inc()
                released.append(found.client_token)
        return released

    def record_utilization(self, request_id: str, utilization: float, at: datetime) -> ComputeRecord | None:
        """Fold one utilization sample (``resource-metrics``) into the record: ``last_sample_at`` (it was
        observed) and ``last_active_at`` (when at or above its ``below_utilization``). Only a running request
        that opted in to idle termination is written."""
        record = self.store.get(request_id)
        if record is None or record.state is not ComputeState.RUNNING:
            return record
        policy = record.request.idle_termination
        if policy is None:
            return record
        update: dict[str, object] = {}
        if record.last_sample_at is None or at > record.last_sample_at:
            update["last_sample_at"] = at
        active = last_active(record.last_active_at, utilization, at, policy.below_utilization)
        if active != record.last_active_at:
            update["last_active_at"] = active
        if update:
            record = record.model_copy(update=update)
            self.store[request_id] = record
        return record

    async def _warn_idle(self, record: ComputeRecord, now: datetime) -> ComputeRecord:
        """Announce the ``idle-warning`` of ``record``'s idle stretch and remember it (no state change)."""
        warned = record.model_copy(update={"idle_warned_at": now})
        await self._persist(warned)
        if self._events is not None:
            await self._events(idle_warning_event(warned, now, self.idle.warning_grace_s))
        return warned

    async def enforce(self, now: datetime | None = None) -> list[ComputeRecord]:
        """One sweep: terminate running allocations whose duration elapsed, warn then terminate those idle
        (opt-in, observed samples only: :func:`~pipeline.compute.lifecycle.idle_step`), and retry releases
        stuck in ``terminating``. Returns the records it changed (warned ones included)."""
        now = now or self.clock()
        changed = []
        for record in self.records():
            with isolated("compute-enforce", record.request_id):
                if record.state is ComputeState.TERMINATING:
                    changed.append(await self.terminate(record.request_id))
                    continue
                reason = termination_due(record, now)
                step = idle_step(record, now, self.idle.warning_grace_s) if reason is None else None
                if step is IdleStep.WARN:
                    logger.info("idle warning for %s", record.request_id)
                    changed.append(await self._warn_idle(record, now))
                    continue
                if step is IdleStep.TERMINATE:
                    reason = TerminationReason.IDLE
                if reason is not None:
                    logger.info("auto-terminating %s: %s", record.request_id, reason.value)
                    changed.append(await self.terminate(record.request_id, reason))
        return changed

    # ----- capacity -----

    def capacity(
        self, tenant_id: str | None = None, now: datetime | None = None, others: Iterable[ComputeRecord] = ()
    ) -> CapacityView:
        """Body of ``GET /api/v1/compute/capacity`` (capacity by provider/region/resource type and the
        tenant's remaining quota/budget). ``others``: records held elsewhere (other workers' partitions)
        that also occupy the pools; a local record with the same id wins."""
        now = now or self.clock()
        records = {r.request_id: r for r in others}
        records.update((r.request_id, r) for r in self.usage_records(now))
        usage = None
        if tenant_id:
            usage = usage_of(records.values(), tenant_id, now)
        return capacity_view(
            self.book.offers(), records.values(), now,
            tenant=self.policy(tenant_id) if tenant_id else None, usage=usage,
        )

    def holding(self) -> list[ComputeRecord]:
        return [r for r in self.records() if r.state in HOLDING]
