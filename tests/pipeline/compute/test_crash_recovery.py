"""A worker killed in the middle of an allocation leaves nothing running: the attempt's token is derived from
the request id and recorded BEFORE the backend call, and recovery (a fresh service over the persisted records,
as after a restart) releases it by that token, exactly once.

"Killed" is simulated by abandoning the allocating service (its backend call hangs for good) and building a new
service, with a new backend client, over a copy of the records as they were persisted at that moment."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.derivatives_standin import running_standin
from pipeline.compute.access import AccessSecrets
from pipeline.compute.allocation import (
    TOKEN_LENGTH,
    AllocationIntent,
    FailoverPolicy,
    IntentState,
    allocate_with_failover,
    allocation_token,
)
from pipeline.compute.backend import (
    AccessSetup,
    AllocationHandle,
    AllocationState,
    BackendRouter,
    CapacityUnavailable,
)
from pipeline.compute.catalog import Offer, OfferBook
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.kubernetes_provider import pod_name
from pipeline.compute.lifecycle import ComputeRecord, ComputeState, transition
from pipeline.compute.optimizer import TenantPolicy
from pipeline.compute.request import ComputeRequest
from pipeline.compute.service import ComputeService

FAST = FailoverPolicy(max_attempts=3, deadline_s=30, poll_interval_s=0.01, release_retries=2, release_backoff_s=0.01)
REQUEST_ID = "acme.train-1"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def gpu_request() -> ComputeRequest:
    return ComputeRequest.model_validate(
        {"tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6}
    )


class Cloud:
    """What a provider holds (survives the worker), and every call made to it."""

    def __init__(self) -> None:
        self.allocations: dict[str, str] = {}  # token -> allocation id, while held
        self.calls: list[tuple[str, str]] = []
        self.created = 0
        self.allocated = asyncio.Event()
        self._ids = itertools.count(1)

    def active(self) -> list[str]:
        return sorted(self.allocations)


class Double:
    """A backend client over a :class:`Cloud` (idempotent per token). ``hang``: the allocate call makes the
    allocation, then never answers (the worker is killed while waiting)."""

    def __init__(self, cloud: Cloud, *, hang: bool = False) -> None:
        self.cloud, self.hang = cloud, hang

    async def allocate(self, offer: Offer, request: ComputeRequest, *, client_token: str,
                       setup: AccessSetup) -> AllocationHandle:
        self.cloud.calls.append(("allocate", client_token))
        if client_token not in self.cloud.allocations:
            self.cloud.allocations[client_token] = f"alloc-{next(self.cloud._ids)}"
            self.cloud.created += 1
        self.cloud.allocated.set()
        if self.hang:
            await asyncio.Event().wait()
        return AllocationHandle(allocation_id=self.cloud.allocations[client_token], client_token=client_token,
                                offer_id=offer.offer_id, state=AllocationState.RUNNING)

    async def status(self, allocation_id: str) -> AllocationHandle:
        raise AssertionError("not reached")

    async def release(self, allocation_id: str) -> None:
        self.cloud.calls.append(("release", allocation_id))
        for token, held in list(self.cloud.allocations.items()):
            if held == allocation_id:
                del self.cloud.allocations[token]

    async def release_by_token(self, client_token: str) -> None:
        self.cloud.calls.append(("release_by_token", client_token))
        self.cloud.allocations.pop(client_token, None)


def make_service(book: OfferBook, backend: object, store: dict[str, ComputeRecord]) -> ComputeService:
    return ComputeService(
        book=book, backends=BackendRouter(backend),  # type: ignore[arg-type]
        store=store, policies={"acme": TenantPolicy(tenant_id="acme", max_gpus=12)},
        failover=FAST, clock=lambda: NOW,
    )


@pytest.fixture
def engine_book(real_offers: list[Offer]) -> OfferBook:
    return OfferBook([o for o in real_offers if o.gpu_name == "H100" and o.gpu_count == 4])


async def crash_during_allocate(book: OfferBook, cloud: Cloud) -> tuple[dict[str, ComputeRecord], asyncio.Task[object]]:
    """Start an allocation whose backend call hangs after allocating; return the records as persisted then."""
    store: dict[str, ComputeRecord] = {}
    dying = make_service(book, Double(cloud, hang=True), store)
    await dying.submit(REQUEST_ID, gpu_request())
    task: asyncio.Task[object] = asyncio.create_task(dying.start(REQUEST_ID))
    await cloud.allocated.wait()
    return dict(store), task


async def abandon(task: asyncio.Task[object]) -> None:
    """The killed worker never runs again; its task is only dropped at the end of the test."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_crash_during_allocate_is_released_by_its_recorded_token_exactly_once(engine_book: OfferBook) -> None:
    cloud = Cloud()
    persisted, task = await crash_during_allocate(engine_book, cloud)
    record = persisted[REQUEST_ID]
    assert record.state is ComputeState.ALLOCATING
    assert [(i.attempt, i.state) for i in record.intents] == [(1, IntentState.ALLOCATING)]  # recorded before
    token = record.intents[0].client_token
    assert cloud.active() == [token] and cloud.created == 1

    restarted = make_service(engine_book, Double(cloud), persisted)  # nothing of the dead worker in memory
    failed = await restarted.fail_abandoned(REQUEST_ID)
    assert failed.state is ComputeState.FAILED
    assert cloud.active() == [] and cloud.created == 1  # released, and nothing allocated a second time
    assert [i.state for i in failed.intents] == [IntentState.RELEASED]
    assert [c for c in cloud.calls if c[0] == "release_by_token"] == [("release_by_token", token)]
    assert (await restarted.release_leftovers()) == []  # a finished, released record: nothing more to do
    await abandon(task)


async def test_the_token_is_deterministic_so_a_repeated_call_adopts_the_same_allocation(engine_book: OfferBook) -> None:
    cloud = Cloud()
    persisted, task = await crash_during_allocate(engine_book, cloud)
    intent = persisted[REQUEST_ID].intents[0]
    offer = engine_book.get(intent.offer_id)
    assert offer is not None
    assert intent.client_token == allocation_token(REQUEST_ID, 1, offer.provider, offer.offer_id)
    # The same attempt made again (e.g. a retry of the call) is the same allocation at the backend.
    again = await Double(cloud).allocate(offer, gpu_request(), client_token=intent.client_token,
                                          setup=AccessSecrets.generate().setup())
    assert again.allocation_id == cloud.allocations[intent.client_token] and cloud.created == 1
    await abandon(task)


async def test_a_finished_record_with_an_open_intent_is_released_by_the_sweep_once(engine_book: OfferBook) -> None:
    cloud = Cloud()
    persisted, task = await crash_during_allocate(engine_book, cloud)
    record = persisted[REQUEST_ID]
    # Finished meanwhile (say, failed by an older sweep that knew nothing of intents): the token stays open.
    persisted[REQUEST_ID] = transition(record, ComputeState.FAILED, NOW + timedelta(hours=1), reason="abandoned")
    restarted = make_service(engine_book, Double(cloud), persisted)
    changed = await restarted.release_leftovers()
    assert [r.request_id for r in changed] == [REQUEST_ID] and cloud.active() == []
    assert (await restarted.release_leftovers()) == []
    assert len([c for c in cloud.calls if c[0] == "release_by_token"]) == 1
    await abandon(task)


async def test_no_backend_call_without_a_recorded_intent(engine_book: OfferBook) -> None:
    cloud = Cloud()
    offers = list(engine_book.offers())[:2]

    async def unrecordable(intent: AllocationIntent) -> None:
        raise RuntimeError("compute-records topic unreachable")

    result = await allocate_with_failover(
        gpu_request(), offers, Double(cloud), AccessSecrets.generate().setup(), policy=FAST,
        request_id=REQUEST_ID, on_intent=unrecordable,
    )
    assert not result.ok and "intent not recorded" in (result.error or "")
    assert cloud.calls == [] and len(result.attempts) == 1  # stopped: no other candidate either


async def test_intents_are_settled_after_a_failover_run(engine_book: OfferBook) -> None:
    cloud = Cloud()

    class RefusesFirst(Double):
        async def allocate(self, offer: Offer, request: ComputeRequest, *, client_token: str,
                           setup: AccessSetup) -> AllocationHandle:
            if not cloud.calls:
                cloud.calls.append(("allocate", client_token))
                raise CapacityUnavailable("none left")
            return await super().allocate(offer, request, client_token=client_token, setup=setup)

    store: dict[str, ComputeRecord] = {}
    service = make_service(engine_book, RefusesFirst(cloud), store)
    await service.submit(REQUEST_ID, gpu_request())
    result = await service.start(REQUEST_ID)
    assert result.record.state is ComputeState.RUNNING
    assert [i.state for i in result.record.intents] == [IntentState.RELEASED, IntentState.HELD]
    assert result.record.client_token == result.record.intents[1].client_token
    assert service.live_tokens() == ({"acme"}, {result.record.client_token})


async def test_engine_allocation_left_by_a_crash_is_released_through_a_fresh_client(real_offers: list[Offer]) -> None:
    """The engine contract's idempotent allocate per client token and release by token (docs/compute.md):
    the stand-in makes the allocation and hangs (the worst case); a fresh client releases it by the token."""
    offers = [o for o in real_offers if o.gpu_name == "H100" and o.gpu_count == 4][:5]
    async with running_standin(offers, default_capacity=2) as standin:
        standin.engine.fail_next(1, "timeout", hang_s=60)
        store: dict[str, ComputeRecord] = {}
        async with DerivativesEngineClient(standin.url, allocate_timeout_s=60) as dying_client:
            dying = make_service(OfferBook(offers), dying_client, store)
            await dying.submit(REQUEST_ID, gpu_request())
            task = asyncio.create_task(dying.start(REQUEST_ID))
            await standin.engine.wait_for_allocation()
            persisted = dict(store)
            assert len(standin.engine.active_allocations()) == 1
            async with DerivativesEngineClient(standin.url) as fresh_client:
                restarted = make_service(OfferBook(offers), fresh_client, persisted)
                failed = await restarted.fail_abandoned(REQUEST_ID)
            assert failed.state is ComputeState.FAILED
            assert standin.engine.active_allocations() == []
            assert standin.engine.allocate_calls == 1
            await abandon(task)  # its late answer meets a tombstoned token: nothing new is made
            assert standin.engine.active_allocations() == []


@given(
    request_id=st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?\.[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?",
                             fullmatch=True),
    attempt=st.integers(min_value=1, max_value=1000),
    provider=st.sampled_from(["aws", "gcp", "azure", "kubernetes", "lambda"]),
    offer_id=st.text(min_size=1, max_size=120),
)
def test_allocation_tokens_are_deterministic_safe_and_distinct_per_attempt(
    request_id: str, attempt: int, provider: str, offer_id: str
) -> None:
    token = allocation_token(request_id, attempt, provider, offer_id)
    assert token == allocation_token(request_id, attempt, provider, offer_id)
    assert len(token) <= TOKEN_LENGTH and pod_name(token) == f"compute-{token}"  # names a Pod, labels it whole
    AllocationIntent(attempt=attempt, client_token=token, provider=provider, offer_id=offer_id, at=NOW)
    assert token != allocation_token(request_id, attempt + 1, provider, offer_id)
    assert token != allocation_token(request_id, attempt, provider, offer_id + "x")



async def test_the_sweep_goes_on_past_a_record_whose_release_raises(engine_book: OfferBook) -> None:
    """An unexpected error releasing one record (not a typed BackendError) must not stop the sweep for the
    others, nor the sweep's next run."""
    cloud = Cloud()

    class Broken(Double):
        async def release(self, allocation_id: str) -> None:
            if allocation_id == "alloc-bad":
                raise RuntimeError("provider client bug")
            await super().release(allocation_id)

    offer = next(iter(engine_book.offers()))
    store: dict[str, ComputeRecord] = {}
    for name, allocation_id in (("acme.bad", "alloc-bad"), ("acme.good", "alloc-good")):
        record = ComputeRecord.new(name, gpu_request(), NOW)
        record = transition(record, ComputeState.ALLOCATING, NOW)
        record = transition(record, ComputeState.PROVISIONING, NOW, offer=offer, allocation_id=allocation_id)
        store[name] = transition(record, ComputeState.TERMINATING, NOW, reason="user")
        cloud.allocations[f"token-{name}"] = allocation_id
    service = make_service(engine_book, Broken(cloud), store)
    changed = await service.enforce(NOW)
    assert [r.request_id for r in changed] == ["acme.good"] and store["acme.good"].state is ComputeState.TERMINATED
    assert store["acme.bad"].state is ComputeState.TERMINATING
    assert await service.enforce(NOW) == []  # the next run: tried again, still isolated
