"""The compute service inside the worker: allocations in background tasks, the periodic sweep and
utilization samples.

Nothing here knows Faust: the agents and the web layer hand in the table view and the senders
(``agents/compute_service.py``), and tests hand in dicts and lists. See docs/compute.md, "In the worker".
Ids: :mod:`pipeline.compute.request_ids`; the record store: :mod:`pipeline.compute.record_store`; undelivered
access details: :mod:`pipeline.compute.vault`; building it from settings: :mod:`pipeline.compute.factory`.

:class:`ComputeRuntime` runs allocations in tasks of their own (a requester that stops waiting does not
cancel them) and ``tick()`` does the periodic work: start due reservations, auto-terminate, retry stuck
releases, fail abandoned requests, expire unclaimed access details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.compute.access import AccessDetails, mask_value
from pipeline.compute.backend import BackendError
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.lifecycle import (
    CapacityView,
    ComputeEvent,
    ComputeRecord,
    ComputeState,
)
from pipeline.compute.optimizer import Decision, NoFeasibleOffer
from pipeline.compute.quota import ComputeQuotaRefused, QuotaRefusal
from pipeline.compute.quote_cache import QuoteSource
from pipeline.compute.record_store import TopicRecordStore
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import event_request_id, tenant_of
from pipeline.compute.service import ComputeService, UnknownRequest
from pipeline.compute.vault import AccessVault
from pipeline.events.models import ComputeRequested, ProvisioningStatusEvent, ResourceMetrics
from pipeline.isolation import isolated
from pipeline.outputs import derived_id

logger = logging.getLogger(__name__)


def status_event(event: ComputeEvent, record: ComputeRecord | None) -> ProvisioningStatusEvent:
    """The ``provisioning-events`` record (kind ``compute-status``) of a state change, or of an
    ``idle-warning`` notice (status ``idle-warning``, id derived from the idle stretch's start); secrets masked."""
    detail = mask_value(event.model_dump(mode="json"))
    if event.notice is not None:
        since = event.idle_since.isoformat() if event.idle_since is not None else ""
        return ProvisioningStatusEvent(
            event_id=derived_id("compute-status", event.request_id, event.notice.value, since),
            tenant_id=event.tenant_id,
            occurred_at=event.at,
            kind="compute-status",
            resource="compute",
            status=event.notice.value,
            previous_status=event.state.value,
            detail=detail,
        )
    changes = len(record.history) if record is not None else 0
    previous = record.history[-2].state.value if record is not None and len(record.history) >= 2 else None
    return ProvisioningStatusEvent(
        event_id=derived_id("compute-status", event.request_id, event.state.value, str(changes)),
        tenant_id=event.tenant_id,
        occurred_at=event.at,
        kind="compute-status",
        resource="compute",
        status=event.state.value,
        previous_status=previous,
        detail=detail,
    )


def utilization_of(record: ComputeRecord, sample: ResourceMetrics) -> float:
    """Utilization (0..1) of an allocation from one ``resource-metrics`` sample: the busier of GPUs in use
    / GPUs of the machine and CPU cores in use / vCPUs of the machine."""
    offer = record.offer
    if offer is None:
        return 0.0
    gpu = sample.gpus / offer.gpu_count if offer.gpu_count else 0.0
    cpu = sample.cpu_cores / offer.vcpus if offer.vcpus else 0.0
    return min(max(gpu, cpu), 1.0)


def month_start(now: datetime) -> datetime:
    """Start of the calendar month (UTC) of ``now``: the default budget period."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)




@dataclass(frozen=True)
class Provisioned:
    """What ``POST`` learns: the record, and the access details WITH secrets when it reached running
    while the requester waited (hand them out once, never store or log them)."""

    record: ComputeRecord
    access: AccessDetails | None
    finished: bool


class ComputeRuntime:
    """Everything the agents and the REST routes of one worker call (see the module docstring)."""

    def __init__(
        self,
        service: ComputeService,
        store: TopicRecordStore,
        vault: AccessVault,
        *,
        engine: DerivativesEngineClient | None = None,
        quotes: QuoteSource | None = None,
        quote_on_request: bool = False,
        closers: tuple[Callable[[], Awaitable[None]], ...] = (),
        stale_after_s: float = 900.0,
        activity_step_s: float = 30.0,
        provision_wait_s: float = 60.0,
    ) -> None:
        self.service = service
        self.store = store
        self.vault = vault
        self.engine = engine
        self.quotes: QuoteSource | None = quotes if quotes is not None else engine
        """Where quotes come from: the engine, or the workers' shared cache in front of it."""
        self.quote_on_request = quote_on_request
        """Whether provision and quote ask for a quote of the request's GPU type, providers and regions first."""
        self._merged_quotes: deque[str] = deque(maxlen=256)
        self._closers = closers
        self.stale_after_s = stale_after_s
        self.activity_step_s = activity_step_s
        self.provision_wait_s = provision_wait_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.last_refresh: datetime | None = None
        self._engine_failing = False  # the last refresh of offers failed (logged once per spell)

    # ----- allocation ------------------------------------------------------------------------------

    def busy(self, request_id: str) -> bool:
        """Whether this worker is working on ``request_id`` (allocating it, or about to)."""
        return request_id in self._tasks or self.service.inflight(request_id)

    def _launch(self, request_id: str) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                result = await self.service.start(request_id)
            except NoFeasibleOffer as exc:
                logger.info("compute request %s: nothing feasible any more: %s", request_id, exc)
                return
            except (ValueError, UnknownRequest) as exc:
                logger.warning("compute request %s not started: %s", request_id, exc)
                return
            if result.access is not None and result.record.state is ComputeState.RUNNING:
                self.vault.deposit(request_id, result.access)

        task = asyncio.get_running_loop().create_task(run(), name=f"compute-{request_id}")
        self._tasks[request_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(request_id, None))
        return task

    async def refresh_for(self, request: ComputeRequest) -> bool:
        """With ``quote_on_request``: merge a current quote of ``request``'s GPU type, providers and regions into
        the offer book before deciding (fresh wholesale prices and availability). The quote comes through the
        workers' shared cache when there is one, so requests alike on any worker within its TTL share one quote
        and one engine call. A quote already merged here (the same ``quote_id``) is not merged again. An engine
        failure is logged and the decision uses the offers as they are. Returns whether it merged a quote."""
        if not self.quote_on_request or self.quotes is None:
            return False
        gpu = request.resources.gpu
        try:
            quote = await self.quotes.quote(
                gpu_name=gpu.type if gpu is not None else None, providers=request.providers, regions=request.regions
            )
        except BackendError as exc:
            logger.warning("no quote from the derivatives engine for a request of %s: %s", request.tenant_id, exc)
            return False
        if quote.quote_id in self._merged_quotes:
            return False
        self.service.book.merge(quote.offers)
        self._merged_quotes.append(quote.quote_id)
        return True

    async def provision(self, request_id: str, request: ComputeRequest, wait_s: float | None = None) -> Provisioned:
        """Submit (``NoFeasibleOffer``: the 422), then allocate in a task of its own and wait up to
        ``wait_s`` for it. A reservation (``start_at`` later) is only submitted; ``tick`` starts it."""
        await self.refresh_for(request)
        record = await self.service.submit(request_id, request)
        if request.starts_after(self.service.clock()):
            return Provisioned(record, None, finished=False)
        task = self._launch(request_id)
        wait = self.provision_wait_s if wait_s is None else wait_s
        if wait > 0:
            await asyncio.wait({task}, timeout=wait)
        if not task.done():
            return Provisioned(self.service.get(request_id), None, finished=False)
        return Provisioned(self.service.get(request_id), self.vault.claim(request_id), finished=True)

    async def rejoin(self, request_id: str, wait_s: float | None = None) -> Provisioned:
        """A retried ``POST`` of a request that exists (same Idempotency-Key or request_name, same body):
        nothing is submitted or allocated again; wait up to ``wait_s`` for the allocation still in flight here,
        then answer with the record as it is. The access details go to whoever claims them first (the first
        answer, if its requester still waits, else this one or ``POST .../access``): they exist once."""
        task = self._tasks.get(request_id)
        wait = self.provision_wait_s if wait_s is None else wait_s
        if task is not None and wait > 0:
            await asyncio.wait({task}, timeout=wait)
        record = self.service.get(request_id)
        if self.busy(request_id) or record.state in (ComputeState.ALLOCATING, ComputeState.PROVISIONING):
            return Provisioned(record, None, finished=False)
        if record.state is ComputeState.REQUESTED:  # a reservation, or its start is being arranged
            return Provisioned(record, None, finished=False)
        access = self.vault.claim(request_id) if record.state is ComputeState.RUNNING else None
        return Provisioned(record, access, finished=True)

    def quote(self, request: ComputeRequest) -> tuple[Decision, QuotaRefusal | None]:
        """What ``provision`` would decide for ``request`` now (current offers, the tenant's usage, discounts,
        cap and budget), and the quota refusal it would meet, if any. Stores, allocates and announces
        nothing."""
        decision = self.service.decide(request)
        try:
            self.service.admission(request)
        except ComputeQuotaRefused as exc:
            return decision, exc.refusal
        return decision, None

    def tenant_records(self, tenant_id: str) -> list[ComputeRecord]:
        """Every record of ``tenant_id`` on this worker (the listing), in no particular order."""
        return self.store.of_tenant(tenant_id)

    async def submit_event(self, event: ComputeRequested) -> ComputeRecord | None:
        """A ``compute-request-events`` event: submit and start it in the background (never waits for the
        allocation). Returns ``None`` for a request id that exists already (a redelivery)."""
        request_id = event_request_id(event)
        if self.store.get(request_id) is not None or self.busy(request_id):
            logger.info("compute request %s exists; event %s ignored", request_id, event.event_id)
            return None
        request = ComputeRequest.of(event.tenant_id, event)
        await self.refresh_for(request)
        if self.store.get(request_id) is not None or self.busy(request_id):  # submitted while we asked
            return None
        try:
            record = await self.service.submit(request_id, request)
        except NoFeasibleOffer as exc:
            logger.info("compute request %s refused: %s", request_id, exc)
            return self.service.get(request_id)
        if not request.starts_after(self.service.clock()):
            self._launch(request_id)
        return record

    def claim(self, request_id: str) -> AccessDetails | None:
        return self.vault.claim(request_id)

    def get(self, request_id: str) -> ComputeRecord:
        return self.service.get(request_id)

    async def terminate(self, request_id: str) -> ComputeRecord:
        record = await self.service.terminate(request_id)
        self.vault.discard(request_id)
        return record

    def capacity(self, tenant_id: str | None, others: list[ComputeRecord] | None = None) -> CapacityView:
        return self.service.capacity(tenant_id, others=others or ())

    def holding(self) -> list[ComputeRecord]:
        return self.service.holding()

    # ----- periodic work ---------------------------------------------------------------------------

    async def refresh_offers(self) -> int | None:
        """Merge the engine's current quote into the offer book (``None`` when the engine failed)."""
        if self.quotes is None:
            return None
        try:
            count = await self.service.refresh_offers(self.quotes)
        except BackendError as exc:
            # One warning per spell of failures (an engine still starting, or down, fails every refresh).
            level = logging.DEBUG if self._engine_failing else logging.WARNING
            logger.log(level, "could not refresh offers from the derivatives engine (tried again every refresh; "
                       "logged again when it answers): %s", exc)
            self._engine_failing = True
            return None
        if self._engine_failing:
            logger.info("the derivatives engine answers again: %d offers refreshed", count)
            self._engine_failing = False
        self.last_refresh = self.service.clock()
        return count

    async def tick(self, now: datetime | None = None) -> dict[str, int]:
        """Start due reservations, auto-terminate (end of duration, idle), retry stuck releases, fail
        abandoned requests (releasing the tokens their intents recorded), release what finished requests
        may still hold and what the providers hold without a live record (orphans), expire unclaimed
        access details, trim the overlay. One record or step that fails is counted and logged
        (``provisioning_failures_total``) and the rest goes on. Returns counts."""
        now = now or self.service.clock()
        started = abandoned = 0
        for record in self.service.records():
            if record.state not in (ComputeState.REQUESTED, ComputeState.ALLOCATING, ComputeState.PROVISIONING):
                continue
            if self.busy(record.request_id):
                continue
            with isolated("compute-sweep", record.request_id):
                start_at = record.request.start_at
                if record.state is ComputeState.REQUESTED and start_at is not None and start_at > record.created_at:
                    if start_at > now:
                        continue
                    if now >= start_at + timedelta(hours=record.request.duration_hours):
                        await self.service.fail_abandoned(
                            record.request_id, "reservation_missed",
                            "the reservation's whole duration passed before it could start")
                        abandoned += 1
                        continue
                    self._launch(record.request_id)
                    started += 1
                    continue
                if (now - record.updated_at).total_seconds() >= self.stale_after_s:
                    failed = await self.service.fail_abandoned(record.request_id)
                    abandoned += failed.state is ComputeState.FAILED
        changed: list[ComputeRecord] = []
        with isolated("compute-enforce"):
            changed = await self.service.enforce(now)
        for record in changed:
            if record.terminal:
                self.vault.discard(record.request_id)
        leftovers: list[ComputeRecord] = []
        with isolated("compute-release"):
            leftovers = await self.service.release_leftovers()
        orphans = 0
        for provider, backend in self.service.backends.by_provider.items():
            with isolated("compute-orphans", provider):
                orphans += len(await self.service.release_orphans(provider, backend, now, self.stale_after_s))
        expired = self.vault.expire()
        trimmed = self.store.trim(self.busy)
        return {"started": started, "terminated": sum(r.terminal for r in changed), "abandoned": abandoned,
                "leftovers_released": len(leftovers), "orphans_released": orphans,
                "access_expired": len(expired), "overlay_trimmed": trimmed}

    def record_metrics(self, sample: ResourceMetrics) -> ComputeRecord | None:
        """Fold a ``resource-metrics`` sample whose ``workload`` is a running request's id (the tag that maps
        a sample to an allocation; same tenant) into its observed activity (idle termination, for requests
        that opted in). Samples are kept at a resolution of ``activity_step_s`` so that a busy machine does
        not write its record on every sample. Returns the record when it changed."""
        request_id = sample.workload
        if tenant_of(request_id) != sample.tenant_id:
            return None
        record = self.store.get(request_id)
        if record is None or record.state is not ComputeState.RUNNING or record.request.idle_termination is None:
            return None
        utilization = utilization_of(record, sample)
        busy = utilization >= record.request.idle_termination.below_utilization
        # an idle sample is compared with the last sample, a busy one with the last busy mark
        previous = record.last_active_at if busy else record.last_sample_at
        if previous is not None and (sample.occurred_at - previous).total_seconds() < self.activity_step_s:
            return None
        updated = self.service.record_utilization(request_id, utilization, sample.occurred_at)
        return updated if updated is not None and updated != record else None

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop: cancel allocations in flight (they release what they hold), send pending writes."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        await self.store.close()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()


