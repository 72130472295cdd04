"""The compute service inside the worker: records written through a topic, one-time access delivery,
allocations in background tasks, the periodic sweep and utilization samples.

Nothing here knows Faust: the agents and the web layer hand in the table view and the senders
(``agents/compute_service.py``), and tests hand in dicts and lists. See docs/compute.md, "In the worker".

* Request ids are ``<tenant_id>.<name>`` (``.`` cannot occur in a tenant id), so the tenant, and so the
  worker owning the request, follows from the id alone. Records are stored under ``<tenant_id>/<id>``.
* :class:`TopicRecordStore` is the service's ``RecordStore``: a write goes to an in-memory overlay (read
  your writes) and, in order, to the ``compute-records`` topic, whose agent writes the changelog-backed
  table (Faust tables can only be written by an agent processing an event of the same partition).
* :class:`AccessVault` keeps access details (private key, Jupyter token) that could not be handed over in
  the ``POST`` response in this process's memory only, until claimed once or expired: never in a table,
  a topic, an event or a log.
* :class:`ComputeRuntime` runs allocations in tasks of their own (a requester that stops waiting does not
  cancel them) and ``tick()`` does the periodic work: start due reservations, auto-terminate, retry stuck
  releases, fail abandoned requests, expire unclaimed access details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pipeline.compute.access import AccessConfig, AccessDetails, mask_value
from pipeline.compute.allocation import FailoverPolicy
from pipeline.compute.backend import BackendError, BackendRouter, ComputeBackend
from pipeline.compute.catalog import PACKAGED_CATALOG_DIR, Offer, OfferBook, load_catalogs
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.kubernetes_provider import KubernetesComputeProvider
from pipeline.compute.lifecycle import (
    TERMINAL,
    CapacityView,
    ComputeEvent,
    ComputeRecord,
    ComputeState,
    IdlePolicy,
)
from pipeline.compute.optimizer import NoFeasibleOffer, TenantComputeSettings, TenantPolicy
from pipeline.compute.request import ComputeRequest
from pipeline.compute.service import ComputeService, QuotaLookup, UnknownRequest
from pipeline.config import Settings
from pipeline.events.models import TENANT_ID_PATTERN, ComputeRequested, ProvisioningStatusEvent, ResourceMetrics
from pipeline.isolation import isolated
from pipeline.outputs import derived_id

logger = logging.getLogger(__name__)

_NAME = r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?"
REQUEST_ID_PATTERN = rf"^(?P<tenant>{TENANT_ID_PATTERN[1:-1]})\.(?P<name>{_NAME})$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RecordSender = Callable[[ComputeRecord], Awaitable[None]]
StatusSender = Callable[[ProvisioningStatusEvent], Awaitable[None]]


# -- ids ---------------------------------------------------------------------------------------------


def new_request_id(tenant_id: str) -> str:
    """A fresh request id of ``tenant_id`` (REST requests)."""
    return f"{tenant_id}.c{secrets.token_hex(10)}"


def event_request_id(event: ComputeRequested) -> str:
    """The request id of an event: ``<tenant>.<request_name>``, else derived from the event id (so a
    redelivered event maps to the same request)."""
    name = event.request_name or f"e{derived_id('compute-request', event.event_id)[:20]}"
    return f"{event.tenant_id}.{name}"


def tenant_of(request_id: str) -> str | None:
    """The tenant of a well-formed request id, else ``None``."""
    match = _REQUEST_ID.fullmatch(request_id)
    return match.group("tenant") if match else None


def record_key(request_id: str) -> str | None:
    """Key of the request's record in the table (``<tenant>/<request id>``), ``None`` if malformed."""
    tenant = tenant_of(request_id)
    return f"{tenant}/{request_id}" if tenant is not None else None


# -- the table ---------------------------------------------------------------------------------------


class RecordTable(Protocol):
    """What the store needs from the table: ``pipeline.typed_table.TypedTable[ComputeRecord]``."""

    backend: Any

    def get(self, key: str) -> ComputeRecord | None: ...

    def put(self, key: str, value: ComputeRecord) -> None: ...


def _version(record: ComputeRecord) -> tuple[int, datetime, datetime]:
    return len(record.history), record.updated_at, record.last_active_at or _EPOCH


def supersedes(candidate: ComputeRecord, current: ComputeRecord | None) -> bool:
    """Whether ``candidate`` may replace ``current`` in the table: records only move forward (more state
    changes, or a later update), and a finished record is never replaced by an unfinished one (a late
    write of a worker that lost the tenant's partition)."""
    if current is None:
        return True
    if current.terminal and not candidate.terminal:
        return False
    return _version(candidate) >= _version(current)


def apply_record(table: RecordTable, record: ComputeRecord) -> bool:
    """Write ``record`` to the table unless it is stale (the ``compute-records`` agent's function)."""
    key = record_key(record.request_id)
    if key is None:
        logger.warning("dropping a compute record with a malformed request id %r", record.request_id[:80])
        return False
    if not supersedes(record, table.get(key)):
        return False
    table.put(key, record)
    return True


class RecordNotWritten(Exception):
    """A record could not be written to the ``compute-records`` topic."""


class TopicRecordStore:
    """The service's ``RecordStore`` in the worker: an in-memory overlay over the table, written through
    the ``compute-records`` topic in order (``send``). ``flush()`` waits until every write is sent.

    ``values()`` leaves out records finished before ``finished_since()`` (outside the budget period: no
    computation of the service needs them), deciding on the raw table value before parsing it.
    """

    def __init__(
        self,
        table: RecordTable,
        send: RecordSender,
        *,
        finished_since: Callable[[], datetime | None] = lambda: None,
        retries: int = 5,
        retry_delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self._send = send
        self._finished_since = finished_since
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._clock = clock
        self._overlay: dict[str, tuple[ComputeRecord, float]] = {}
        self._queue: asyncio.Queue[ComputeRecord] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._unsent = 0
        self._given_up = 0

    def get(self, key: str, /) -> ComputeRecord | None:
        entry = self._overlay.get(key)
        if entry is not None:
            return entry[0]
        table_key = record_key(key)
        return self.table.get(table_key) if table_key is not None else None

    def __setitem__(self, key: str, value: ComputeRecord, /) -> None:
        self._overlay[key] = (value, self._clock())
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._queue.put_nowait(value)
        self._unsent += 1
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._drain(self._queue), name="compute-records")

    def values(self) -> list[ComputeRecord]:
        since = self._finished_since()
        records: dict[str, ComputeRecord] = {}
        for _, raw in list(self.table.backend.items()):
            if not isinstance(raw, dict):
                continue
            if since is not None and raw.get("state") in TERMINAL and not self._finished_after(raw, since):
                continue
            record = ComputeRecord.model_validate(raw)
            records[record.request_id] = record
        for request_id, (record, _) in list(self._overlay.items()):
            records[request_id] = record
        return list(records.values())

    @staticmethod
    def _finished_after(raw: dict[str, Any], since: datetime) -> bool:
        finished = raw.get("finished_at") or raw.get("updated_at")
        if not isinstance(finished, str):
            return True
        try:
            return datetime.fromisoformat(finished.replace("Z", "+00:00")) >= since
        except ValueError:
            return True

    async def persist(self, record: ComputeRecord) -> None:
        """Write ``record`` and wait until it is sent; raises :class:`RecordNotWritten` when a write given
        up on meanwhile may have been this one (a side effect keyed by it must then not be started)."""
        given_up = self._given_up
        self[record.request_id] = record
        await self.flush()
        if self._given_up != given_up:
            raise RecordNotWritten(f"compute record {record.request_id} could not be written")

    async def _drain(self, queue: asyncio.Queue[ComputeRecord]) -> None:
        while True:
            record = await queue.get()
            try:
                if not await self._send_with_retries(record):
                    self._given_up += 1
            finally:
                self._unsent -= 1
                queue.task_done()

    async def _send_with_retries(self, record: ComputeRecord) -> bool:
        for attempt in range(1, self._retries + 1):
            try:
                await self._send(record)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("writing compute record %s failed (try %d): %s", record.request_id, attempt, exc)
                if attempt < self._retries:
                    await asyncio.sleep(self._retry_delay_s * attempt)
        logger.error("compute record %s (%s) was not written; this worker keeps it in memory",
                     record.request_id, record.state.value)
        return False

    async def flush(self) -> None:
        """Return once every write so far is sent (acknowledged by Kafka in the worker)."""
        if self._queue is not None:
            await self._queue.join()

    @property
    def pending(self) -> int:
        """Writes not sent yet (queued or being sent)."""
        return self._unsent

    def applied(self, record: ComputeRecord) -> None:
        """The table now holds ``record`` (the agent wrote it): drop the overlay copy if it is the same."""
        entry = self._overlay.get(record.request_id)
        if entry is not None and entry[0] == record:
            del self._overlay[record.request_id]

    def trim(self, busy: Callable[[str], bool], older_than_s: float = 60.0, give_up_s: float = 3600.0) -> int:
        """Forget overlay copies, older than ``older_than_s``, of requests nobody here works on (``busy``)
        once the table holds them or something newer (missed ``applied`` calls), or after ``give_up_s``
        (the tenant moved to another worker, whose table gets the writes)."""
        if self.pending:
            return 0
        now = self._clock()
        stale = []
        for request_id, (record, at) in list(self._overlay.items()):
            if at >= now - older_than_s or busy(request_id):
                continue
            key = record_key(request_id)
            stored = self.table.get(key) if key is not None else None
            caught_up = stored is not None and (
                _version(stored) >= _version(record) or (stored.terminal and not record.terminal)
            )
            if caught_up or at < now - give_up_s:
                stale.append(request_id)
        for request_id in stale:
            del self._overlay[request_id]
        return len(stale)

    async def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.flush()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender


# -- access details that could not be delivered in the response ---------------------------------------


class AccessVault:
    """Undelivered access details, in this process's memory only, claimable once for ``ttl_s``."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: dict[str, tuple[AccessDetails, float]] = {}

    def deposit(self, request_id: str, access: AccessDetails) -> None:
        self._items[request_id] = (access, self._clock() + self.ttl_s)

    def claim(self, request_id: str) -> AccessDetails | None:
        """The access details, once: they are forgotten here as they are handed out."""
        entry = self._items.pop(request_id, None)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    def holds(self, request_id: str) -> bool:
        entry = self._items.get(request_id)
        return entry is not None and entry[1] > self._clock()

    def discard(self, request_id: str) -> None:
        self._items.pop(request_id, None)

    def expire(self) -> list[str]:
        now = self._clock()
        gone = [rid for rid, (_, until) in self._items.items() if until <= now]
        for request_id in gone:
            del self._items[request_id]
            logger.info("access details of %s expired unclaimed", request_id)
        return gone

    def __len__(self) -> int:
        return len(self._items)


# -- events, utilization --------------------------------------------------------------------------------


def status_event(event: ComputeEvent, record: ComputeRecord | None) -> ProvisioningStatusEvent:
    """The ``provisioning-events`` record (kind ``compute-status``) of a state change; secrets masked."""
    changes = len(record.history) if record is not None else 0
    previous = record.history[-2].state.value if record is not None and len(record.history) >= 2 else None
    detail = mask_value(event.model_dump(mode="json"))
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


# -- the runtime --------------------------------------------------------------------------------------


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
        closers: tuple[Callable[[], Awaitable[None]], ...] = (),
        stale_after_s: float = 900.0,
        activity_step_s: float = 30.0,
        provision_wait_s: float = 60.0,
    ) -> None:
        self.service = service
        self.store = store
        self.vault = vault
        self.engine = engine
        self._closers = closers
        self.stale_after_s = stale_after_s
        self.activity_step_s = activity_step_s
        self.provision_wait_s = provision_wait_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.last_refresh: datetime | None = None

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

    async def provision(self, request_id: str, request: ComputeRequest, wait_s: float | None = None) -> Provisioned:
        """Submit (``NoFeasibleOffer``: the 422), then allocate in a task of its own and wait up to
        ``wait_s`` for it. A reservation (``start_at`` later) is only submitted; ``tick`` starts it."""
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

    async def submit_event(self, event: ComputeRequested) -> ComputeRecord | None:
        """A ``compute-request-events`` event: submit and start it in the background (never waits for the
        allocation). Returns ``None`` for a request id that exists already (a redelivery)."""
        request_id = event_request_id(event)
        if self.store.get(request_id) is not None or self.busy(request_id):
            logger.info("compute request %s exists; event %s ignored", request_id, event.event_id)
            return None
        request = ComputeRequest.of(event.tenant_id, event)
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
        if self.engine is None:
            return None
        try:
            count = await self.service.refresh_offers(self.engine)
        except BackendError as exc:
            logger.warning("could not refresh offers from the derivatives engine: %s", exc)
            return None
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
        """Fold a ``resource-metrics`` sample whose ``workload`` is a running request's id into its
        activity (idle detection). Returns the record when it changed."""
        request_id = sample.workload
        if tenant_of(request_id) != sample.tenant_id:
            return None
        record = self.store.get(request_id)
        if record is None or record.state is not ComputeState.RUNNING:
            return None
        previous = record.last_active_at
        if previous is not None and (sample.occurred_at - previous).total_seconds() < self.activity_step_s:
            return None
        updated = self.service.record_utilization(request_id, utilization_of(record, sample), sample.occurred_at)
        return updated if updated is not None and updated.last_active_at != previous else None

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


# -- building it from settings -------------------------------------------------------------------------


def catalog_paths(settings: Settings) -> list[Path]:
    """Every ``<provider>_vms.v8.csv`` of the catalog folder (default: the packaged copies), then the
    extra catalogs."""
    folder = settings.compute_catalog_dir or PACKAGED_CATALOG_DIR
    return sorted(folder.glob("*_vms.v8.csv")) + list(settings.compute_extra_catalogs)


def tenant_policy(settings: Settings, tenant_id: str, quota_gpus: int | None) -> TenantPolicy:
    """The tenant's policy: its configured entry (or ``"*"``) capped by its quota's GPUs."""
    policies = settings.compute_tenant_policies
    configured = policies.get(tenant_id) or policies.get("*") or TenantComputeSettings()
    return configured.policy(tenant_id, quota_gpus)


def build_runtime(
    settings: Settings,
    *,
    table: RecordTable,
    send_record: RecordSender,
    send_status: StatusSender,
    quota_gpus: Callable[[str], int | None],
    quotas: QuotaLookup,
    engine: DerivativesEngineClient | None = None,
    kubernetes: ComputeBackend | None = None,
    offers: list[Offer] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ComputeRuntime:
    """The worker's runtime from settings (``engine``/``kubernetes``/``offers`` override what the
    settings would build, for tests)."""
    engine = engine or DerivativesEngineClient(
        settings.derivatives_engine_url,
        timeout_s=settings.compute_engine_timeout_seconds,
        allocate_timeout_s=settings.compute_allocate_timeout_seconds,
        api_token=settings.derivatives_engine_api_token.get_secret_value()
        if settings.derivatives_engine_api_token else None,
    )
    k8s_config = settings.compute_kubernetes
    if kubernetes is None:
        kubernetes = KubernetesComputeProvider(
            k8s_config, kubeconfig=str(settings.kubeconfig) if settings.kubeconfig else None
        )
    book = OfferBook(offers if offers is not None else load_catalogs(catalog_paths(settings)))
    book.merge(k8s_config.offers())
    period_start = month_start if settings.compute_budget_period == "month" else None
    store = TopicRecordStore(
        table, send_record, finished_since=lambda: period_start(clock()) if period_start is not None else None
    )

    async def announce(event: ComputeEvent) -> None:
        await store.flush()  # the record is in the table's topic before the event says so
        await send_status(status_event(event, store.get(event.request_id)))

    failover = FailoverPolicy(
        max_attempts=settings.compute_max_attempts,
        deadline_s=settings.compute_deadline_seconds,
        poll_interval_s=settings.compute_poll_interval_seconds,
        provisioning_timeout_s=settings.compute_provisioning_timeout_seconds,
    )
    service = ComputeService(
        book=book,
        backends=BackendRouter(engine, {k8s_config.provider: kubernetes}),
        store=store,
        policies=lambda tenant_id: tenant_policy(settings, tenant_id, quota_gpus(tenant_id)),
        failover=failover,
        access_config=AccessConfig(
            ssh_user=settings.compute_ssh_user,
            jupyter_url_template=settings.compute_jupyter_url_template,
            monitoring_url_template=settings.compute_monitoring_url_template,
        ),
        idle=IdlePolicy(
            idle_timeout_s=settings.compute_idle_timeout_seconds, busy_threshold=settings.compute_busy_threshold
        ),
        events=announce,
        clock=clock,
        period_start=period_start,
        quotas=quotas,
    )
    stale_after = failover.deadline_s + failover.release_timeout_s * failover.release_retries + 120.0
    idle_timeout = settings.compute_idle_timeout_seconds
    return ComputeRuntime(
        service,
        store,
        AccessVault(settings.compute_access_claim_ttl_seconds),
        engine=engine,
        closers=(engine.close,),
        stale_after_s=stale_after,
        activity_step_s=min(30.0, idle_timeout / 4) if idle_timeout is not None else 30.0,
        provision_wait_s=settings.compute_provision_wait_seconds,
    )
