"""Failover against the STAND-IN engine in-process: nothing may stay allocated after abandoned attempts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from devstack.derivatives_standin import RunningStandin, running_standin
from pipeline.compute.access import AccessSecrets
from pipeline.compute.allocation import Attempt, AttemptOutcome, FailoverPolicy, allocate_with_failover
from pipeline.compute.backend import AccessSetup, AllocationHandle, BackendUnavailable, CapacityUnavailable
from pipeline.compute.catalog import Offer, OfferBook
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.optimizer import FailureHistory, choose
from pipeline.compute.request import ComputeRequest

REQUEST = ComputeRequest.model_validate(
    {"tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6}
)
FAST = FailoverPolicy(max_attempts=4, deadline_s=30, poll_interval_s=0.01, release_retries=2, release_backoff_s=0.01)


@pytest.fixture
async def standin(real_offers: list[Offer]) -> AsyncIterator[RunningStandin]:
    async with running_standin(real_offers, default_capacity=3) as running:
        yield running


@pytest.fixture
async def engine(standin: RunningStandin) -> AsyncIterator[DerivativesEngineClient]:
    async with DerivativesEngineClient(standin.url, timeout_s=5, allocate_timeout_s=0.3) as client:
        yield client


@pytest.fixture(scope="module")
def setup() -> AccessSetup:
    return AccessSecrets.generate("failover-test").setup()


def candidates(book: OfferBook, request: ComputeRequest = REQUEST) -> list[Offer]:
    decision = choose(request, book).raise_if_infeasible()
    return [o for o in (book.get(c.offer_id) for c in decision.candidates) if o is not None]


@pytest.mark.parametrize("k", [0, 1, 3])
async def test_first_k_refused_then_running(
    k: int, book: OfferBook, standin: RunningStandin, engine: DerivativesEngineClient, setup: AccessSetup
) -> None:
    offers = candidates(book)
    standin.engine.fail_next(k, "refused")
    seen: list[Attempt] = []
    history = FailureHistory()
    result = await allocate_with_failover(REQUEST, offers, engine, setup, policy=FAST, history=history,
                                          on_attempt=seen.append)
    assert result.ok and result.offer == offers[k]
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.REFUSED] * k + [AttemptOutcome.RUNNING]
    assert seen == result.attempts
    assert [a.offer_id for a in result.attempts] == [o.offer_id for o in offers[: k + 1]]
    assert dict(history) == {o.offer_id: 1 for o in offers[:k]}
    active = standin.engine.active_allocations()
    assert [a["allocation_id"] for a in active] == [result.allocation.allocation_id]  # type: ignore[union-attr]
    assert result.unreleased == []


async def test_all_fail_leaves_nothing_allocated(
    book: OfferBook, standin: RunningStandin, engine: DerivativesEngineClient, setup: AccessSetup
) -> None:
    offers = candidates(book)
    standin.engine.fail_next(1, "refused")
    standin.engine.fail_next(1, "timeout", hang_s=10)
    standin.engine.fail_next(1, "provision_fail")
    standin.engine.fail_next(1, "error")
    result = await allocate_with_failover(REQUEST, offers, engine, setup, policy=FAST)
    assert not result.ok
    assert [a.outcome for a in result.attempts] == [
        AttemptOutcome.REFUSED,
        AttemptOutcome.TIMEOUT,
        AttemptOutcome.PROVISIONING_FAILED,
        AttemptOutcome.UNAVAILABLE,
    ]
    assert "4 attempt(s)" in (result.error or "")
    assert [a.released for a in result.attempts] == [False, True, True, True]
    assert standin.engine.active_allocations() == []
    assert standin.engine.allocate_calls == 4


async def test_timeouts_then_success_release_the_late_allocations(
    book: OfferBook, standin: RunningStandin, engine: DerivativesEngineClient, setup: AccessSetup
) -> None:
    offers = candidates(book)
    standin.engine.fail_next(2, "timeout", hang_s=10)
    result = await allocate_with_failover(REQUEST, offers, engine, setup, policy=FAST)
    assert result.ok
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.TIMEOUT] * 2 + [AttemptOutcome.RUNNING]
    assert len(standin.engine.active_allocations()) == 1  # the two timed-out ones were made, then released


async def test_capacity_exhausted_provider_fails_over_to_another(
    book: OfferBook, standin: RunningStandin, engine: DerivativesEngineClient, setup: AccessSetup
) -> None:
    request = REQUEST.model_copy(update={"resources": REQUEST.resources.model_copy(update={"gpu": None, "vcpus": 4})})
    offers = candidates(book, request)
    first = offers[0]
    standin.engine.exhaust(first.provider, first.region)
    result = await allocate_with_failover(request, offers, engine, setup, policy=FAST)
    assert result.ok and result.offer is not None
    assert result.attempts[0].outcome is AttemptOutcome.CAPACITY
    assert (result.offer.provider, result.offer.region) != (first.provider, first.region)


async def test_deadline_releases_the_in_flight_attempt(
    book: OfferBook, standin: RunningStandin, real_offers: list[Offer], setup: AccessSetup
) -> None:
    offers = candidates(book)
    standin.engine.fail_next(10, "timeout", hang_s=30)
    policy = FAST.model_copy(update={"deadline_s": 0.5})
    async with DerivativesEngineClient(standin.url, allocate_timeout_s=20) as slow:
        result = await allocate_with_failover(REQUEST, offers, slow, setup, policy=policy)
    assert not result.ok
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.DEADLINE]
    assert result.attempts[0].released
    assert standin.engine.allocate_calls == 1
    assert standin.engine.active_allocations() == []


async def test_provisioning_timeout_moves_on(
    real_offers: list[Offer], book: OfferBook, setup: AccessSetup
) -> None:
    async with running_standin(real_offers, provisioning_s=3600) as standin:
        async with DerivativesEngineClient(standin.url) as engine:
            policy = FAST.model_copy(update={"provisioning_timeout_s": 0.05, "max_attempts": 2})
            result = await allocate_with_failover(REQUEST, candidates(book), engine, setup, policy=policy)
        assert [a.outcome for a in result.attempts] == [AttemptOutcome.TIMEOUT] * 2
        assert standin.engine.active_allocations() == []


async def test_cancellation_releases_the_in_flight_attempt(
    book: OfferBook, standin: RunningStandin, setup: AccessSetup
) -> None:
    offers = candidates(book)
    standin.engine.fail_next(1, "timeout", hang_s=30)
    seen: list[Attempt] = []
    async with DerivativesEngineClient(standin.url, allocate_timeout_s=20) as slow:
        task = asyncio.create_task(allocate_with_failover(REQUEST, offers, slow, setup, policy=FAST,
                                                          on_attempt=seen.append))
        await standin.engine.wait_for_allocation()  # the stand-in has made the allocation and hangs
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [a.outcome for a in seen] == [AttemptOutcome.CANCELLED]
    assert seen[0].released
    assert standin.engine.active_allocations() == []


class _BrokenRelease:
    """A backend whose allocate times out and whose release always fails (a leak we must report)."""

    def __init__(self) -> None:
        self.released: list[str] = []

    async def allocate(self, offer: Offer, request: ComputeRequest, *, client_token: str,
                       setup: AccessSetup) -> AllocationHandle:
        raise BackendUnavailable("connection reset")

    async def status(self, allocation_id: str) -> AllocationHandle:
        raise AssertionError("not reached")

    async def release(self, allocation_id: str) -> None:
        raise BackendUnavailable("down")

    async def release_by_token(self, client_token: str) -> None:
        self.released.append(client_token)
        raise CapacityUnavailable("down")


async def test_failed_release_is_reported_not_hidden(book: OfferBook, setup: AccessSetup) -> None:
    backend = _BrokenRelease()
    result = await allocate_with_failover(REQUEST, candidates(book)[:2], backend, setup, policy=FAST)
    assert not result.ok
    assert result.unreleased == [a.client_token for a in result.attempts]
    assert all(a.release_error for a in result.attempts)
    assert len(backend.released) == 2 * FAST.release_retries


async def test_no_candidates(standin: RunningStandin, engine: DerivativesEngineClient, setup: AccessSetup) -> None:
    result = await allocate_with_failover(REQUEST, [], engine, setup, policy=FAST)
    assert not result.ok and result.attempts == [] and "no candidates" in (result.error or "")
