"""End to end against the STAND-IN engine in-process: choice, failover, access, lifecycle, capacity."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from devstack.derivatives_standin import RunningStandin, running_standin
from pipeline.compute.access import install_secret_masking
from pipeline.compute.allocation import AttemptOutcome, FailoverPolicy
from pipeline.compute.backend import BackendRouter
from pipeline.compute.catalog import Offer, OfferBook
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.lifecycle import (
    ComputeEvent,
    ComputeRecord,
    ComputeState,
    IdlePolicy,
    IdleStep,
    TerminationReason,
)
from pipeline.compute.optimizer import ExclusionReason, NoFeasibleOffer, TenantPolicy
from pipeline.compute.quota import ComputeQuotaRefused
from pipeline.compute.request import ComputeRequest
from pipeline.compute.service import ComputeService
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.models import QuotaRecord

FAST = FailoverPolicy(max_attempts=4, deadline_s=30, poll_interval_s=0.01, release_backoff_s=0.01)


def gpu_request(count: int = 4, **kw: object) -> ComputeRequest:
    body: dict[str, object] = {"tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": count}},
                               "duration_hours": 6, "purpose": "training"}
    body.update(kw)
    return ComputeRequest.model_validate(body)


@dataclass
class Env:
    standin: RunningStandin
    engine: DerivativesEngineClient
    service: ComputeService
    store: dict[str, ComputeRecord]
    events: list[ComputeEvent]
    clock: list[datetime]


@pytest.fixture
async def env(real_offers: list[Offer]) -> AsyncIterator[Env]:
    async with running_standin(real_offers, default_capacity=2) as standin:
        async with DerivativesEngineClient(standin.url, allocate_timeout_s=0.3) as engine:
            store: dict[str, ComputeRecord] = {}
            events: list[ComputeEvent] = []
            clock = [datetime(2026, 5, 1, 12, 0, tzinfo=UTC)]

            async def sink(event: ComputeEvent) -> None:
                events.append(event)

            service = ComputeService(
                book=OfferBook(real_offers),
                backends=BackendRouter(engine),
                store=store,
                policies={"acme": TenantPolicy(tenant_id="acme", max_gpus=12, budget_usd=2000,
                                               discounts={"nebius": 0.1})},
                failover=FAST,
                idle=IdlePolicy(warning_grace_s=600),
                events=sink,
                clock=lambda: clock[0],
            )
            assert await service.refresh_offers(engine) == len(real_offers)
            yield Env(standin, engine, service, store, events, clock)


def _row(service: ComputeService, provider: str, region: str, resource: str) -> tuple[int, int | None]:
    row = next(r for r in service.capacity().rows
               if (r.provider, r.region, r.resource_type) == (provider, region, resource))
    return row.allocated_instances, row.available_instances


async def test_gpu_request_gets_cheapest_offer_and_termination_releases(env: Env) -> None:
    service = env.service
    result = await service.provision("r1", gpu_request())
    record = result.record
    assert record.state is ComputeState.RUNNING
    assert record.decision is not None and record.offer is not None
    assert record.offer.offer_id == record.decision.candidates[0].offer_id
    assert record.offer.offer_id == "lambda/asia-northeast-1/gpu_4x_h100_sxm5/on_demand"
    assert [a.outcome for a in record.attempts] == [AttemptOutcome.RUNNING]
    assert result.access is not None and record.access == result.access.public_view()
    assert [e.state for e in env.events] == [
        ComputeState.REQUESTED, ComputeState.ALLOCATING, ComputeState.PROVISIONING, ComputeState.RUNNING,
    ]
    assert _row(service, "lambda", "asia-northeast-1", "gpu:H100") == (1, 2 * 5 - 1)  # 5 H100 pools there
    view = service.capacity("acme")
    assert view.tenant is not None and view.tenant.gpus_in_use == 4 and view.tenant.gpus_remaining == 8
    assert view.tenant.budget_remaining_usd == pytest.approx(2000 - 16.36 * 6)
    assert len(env.standin.engine.active_allocations()) == 1

    terminated = await service.terminate("r1")
    assert terminated.state is ComputeState.TERMINATED
    assert terminated.termination_reason is TerminationReason.USER and terminated.history[-1].reason == "user"
    assert env.standin.engine.active_allocations() == []
    assert _row(service, "lambda", "asia-northeast-1", "gpu:H100") == (0, 10)
    assert (await service.terminate("r1")).state is ComputeState.TERMINATED  # idempotent


async def test_failover_on_injected_failures(env: Env) -> None:
    env.standin.engine.fail_next(1, "refused")
    env.standin.engine.fail_next(1, "timeout", hang_s=10)
    env.standin.engine.fail_next(1, "provision_fail")
    result = await env.service.provision("r2", gpu_request())
    record = result.record
    assert record.state is ComputeState.RUNNING
    assert [a.outcome for a in record.attempts] == [
        AttemptOutcome.REFUSED, AttemptOutcome.TIMEOUT, AttemptOutcome.PROVISIONING_FAILED, AttemptOutcome.RUNNING,
    ]
    assert record.offer is not None and record.offer.offer_id == record.decision.candidates[3].offer_id  # type: ignore[union-attr]
    states = [h.state for h in record.history]
    assert states.count(ComputeState.PROVISIONING) == 2  # failed to boot once, failed over
    assert [a["allocation_id"] for a in env.standin.engine.active_allocations()] == [record.allocation_id]
    assert env.service.failures.get(record.attempts[0].offer_id) == 1


async def test_all_candidates_fail_then_nothing_is_allocated(env: Env) -> None:
    env.standin.engine.fail_next(4, "capacity")
    result = await env.service.provision("r3", gpu_request())
    assert result.record.state is ComputeState.FAILED and result.access is None
    assert result.record.termination_reason is TerminationReason.ALLOCATION_FAILED and result.record.error
    assert len(result.record.attempts) == 4
    assert env.standin.engine.active_allocations() == []
    assert env.service.capacity("acme").tenant.gpus_in_use == 0  # type: ignore[union-attr]


async def test_quota_and_budget_refusals_with_clear_reasons(env: Env) -> None:
    await env.service.provision("q1", gpu_request(8))
    with pytest.raises(NoFeasibleOffer) as info:
        await env.service.provision("q2", gpu_request(8))
    assert info.value.constraint is ExclusionReason.QUOTA
    assert "may add 4 GPU(s)" in str(info.value)
    stored = env.store["q2"]
    assert stored.state is ComputeState.FAILED and stored.error == str(info.value)
    with pytest.raises(NoFeasibleOffer) as info:
        await env.service.provision("q3", gpu_request(1, duration_hours=24 * 60))
    assert info.value.constraint is ExclusionReason.BUDGET


async def test_an_accepted_reservation_holds_the_budget_and_starts_at_its_time(env: Env) -> None:
    service, t0 = env.service, env.clock[0]
    start = t0 + timedelta(hours=2)
    reserved = (await service.provision("res", gpu_request(4, start_at=start.isoformat(), duration_hours=100))).record
    assert reserved.state is ComputeState.REQUESTED and reserved.decision is not None
    chosen = reserved.decision.chosen
    assert chosen is not None and reserved.reservation is not None
    held = reserved.reservation.budget_held_usd
    assert held == pytest.approx(chosen.total_cost) and 1000 < held < 2000  # more than half the budget
    assert reserved.reservation.quota_held and not reserved.reservation.capacity_held
    assert "Capacity is not held" in reserved.reservation.guarantee
    assert env.standin.engine.active_allocations() == []  # nothing allocated yet
    view = service.capacity("acme")
    assert view.tenant is not None and view.tenant.budget_remaining_usd == pytest.approx(2000 - held)
    # a second request that fits the budget alone, but not on top of the reservation, is refused for budget
    hours = (2000 - held) / chosen.price_per_hour + 1
    with pytest.raises(NoFeasibleOffer) as info:
        await service.provision("second", gpu_request(4, duration_hours=hours))
    assert info.value.constraint is ExclusionReason.BUDGET
    # the reservation starts at its time: its own held budget does not count against itself
    env.clock[0] = start
    started = await service.start("res")
    assert started.record.state is ComputeState.RUNNING and started.record.running_since == start
    # without the reservation the same second request fits
    await service.terminate("res")
    assert (await service.provision("second-again", gpu_request(4, duration_hours=hours))).record.state is (
        ComputeState.RUNNING)


async def test_an_accepted_reservation_holds_the_quota(env: Env) -> None:
    service, t0 = env.service, env.clock[0]
    limits = Quota(cpu_cores=1e9, memory_gib=10**9, gpus=6, storage_gib=10**9)
    service.quotas = lambda tenant_id: QuotaRecord(tenant_id=tenant_id, limits=limits, updated_at=t0,
                                                   updated_by="test")
    start = (t0 + timedelta(days=1)).isoformat()
    await service.provision("res", gpu_request(4, start_at=start, duration_hours=1))
    with pytest.raises(ComputeQuotaRefused) as info:
        await service.provision("now", gpu_request(4, duration_hours=1))
    assert info.value.refusal.code == "quota-exceeded" and "4 in use of a quota of 6" in info.value.refusal.message
    assert service.store.get("now") is None
    assert (await service.provision("small", gpu_request(2, duration_hours=1))).record.state is ComputeState.RUNNING
    await service.terminate("res")  # a cancelled reservation holds nothing any more
    await service.terminate("small")
    assert (await service.provision("now", gpu_request(4, duration_hours=1))).record.state is ComputeState.RUNNING


async def test_automatic_termination_after_duration_and_idle(env: Env) -> None:
    service, t0 = env.service, env.clock[0]
    minute = timedelta(minutes=1)
    idle = {"after_minutes": 30, "below_utilization": 0.1}
    await service.provision("long", gpu_request(1, duration_hours=10, idle_termination=idle))
    await service.provision("short", gpu_request(1, duration_hours=1))
    await service.provision("unwatched", gpu_request(1, duration_hours=10, idle_termination=idle))
    service.record_utilization("long", 0.9, t0 + 50 * minute)
    env.clock[0] = t0 + timedelta(hours=1)
    changed = await service.enforce()
    assert [(r.request_id, r.state) for r in changed] == [("short", ComputeState.TERMINATED)]
    assert changed[0].history[-1].reason == TerminationReason.DURATION_ELAPSED.value
    # idle samples from minute 55 on: 20 observed idle minutes (30 - the 10-minute grace) bring the warning
    env.clock[0] = t0 + 70 * minute
    for at in range(55, 71, 5):
        service.record_utilization("long", 0.02, t0 + at * minute)
    changed = await service.enforce()
    assert [(r.request_id, r.state, r.idle_warned_at) for r in changed] == [
        ("long", ComputeState.RUNNING, t0 + 70 * minute)
    ]
    warning = env.events[-1]
    assert (warning.request_id, warning.notice, warning.idle_since) == ("long", IdleStep.WARN, t0 + 50 * minute)
    assert warning.terminate_not_before == t0 + 80 * minute
    assert await service.enforce() == []  # warned once per idle stretch
    # 30 observed idle minutes at minute 80, the grace period is over at minute 80 too
    env.clock[0] = t0 + 79 * minute
    service.record_utilization("long", 0.02, t0 + 75 * minute)
    assert await service.enforce() == []
    env.clock[0] = t0 + 80 * minute
    service.record_utilization("long", 0.02, t0 + 80 * minute)
    changed = await service.enforce()
    assert [(r.request_id, r.history[-1].reason) for r in changed] == [("long", "idle")]
    assert changed[0].termination_reason is TerminationReason.IDLE
    # opted in but no sample was ever observed: never terminated as idle, only at the end of its duration
    assert service.get("unwatched").state is ComputeState.RUNNING
    env.clock[0] = t0 + timedelta(hours=10)
    changed = await service.enforce()
    assert [(r.request_id, r.termination_reason) for r in changed] == [
        ("unwatched", TerminationReason.DURATION_ELAPSED)
    ]
    assert env.standin.engine.active_allocations() == []


async def test_delete_during_allocation_releases(env: Env) -> None:
    env.standin.engine.fail_next(1, "timeout", hang_s=30)
    slow = FAST.model_copy(update={"deadline_s": 60})
    env.service.failover = slow
    async with DerivativesEngineClient(env.standin.url, allocate_timeout_s=30) as patient:
        env.service.backends = BackendRouter(patient)
        task = asyncio.create_task(env.service.provision("d1", gpu_request()))
        await env.standin.engine.wait_for_allocation()
        record = await env.service.terminate("d1")
        result = await task  # the provisioning caller gets the terminated record, not a cancellation
    assert result.record == record and result.access is None
    assert record.state is ComputeState.TERMINATED and record.termination_reason is TerminationReason.USER
    assert env.standin.engine.active_allocations() == []


async def test_reservation_waits_for_its_start(env: Env) -> None:
    start_at = env.clock[0] + timedelta(hours=3)
    result = await env.service.provision("later", gpu_request(start_at=start_at))
    assert result.record.state is ComputeState.REQUESTED and result.access is None
    assert env.standin.engine.allocate_calls == 0
    env.clock[0] = start_at
    started = await env.service.start("later")
    assert started.record.state is ComputeState.RUNNING


async def test_secrets_never_in_logs_records_or_events(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    masking = install_secret_masking([caplog.handler])
    try:
        env.standin.engine.fail_next(1, "timeout", hang_s=10)
        env.standin.engine.fail_next(1, "provision_fail")
        result = await env.service.provision("s1", gpu_request())
        await env.service.terminate("s1")
        with pytest.raises(NoFeasibleOffer):
            await env.service.provision("s2", gpu_request(16))
    finally:
        caplog.handler.removeFilter(masking)
    assert result.access is not None
    revealed = result.access.reveal()
    private_key = revealed["ssh_private_key"]
    token = revealed["jupyter_token"]
    secrets = [private_key, token, *[line for line in private_key.splitlines() if not line.startswith("-----")]]
    assert len(secrets) >= 3
    # the scan must be able to fail: the secrets are in the one-time response
    assert all(secret in json.dumps(revealed) for secret in secrets[1:])
    haystacks = {
        "logs": caplog.text + "\n".join(str(r.__dict__) for r in caplog.records),
        "records": "\n".join(r.model_dump_json() for r in env.store.values()),
        "events": "\n".join(e.model_dump_json() for e in env.events),
        "capacity": env.service.capacity("acme").model_dump_json(),
    }
    assert caplog.records and env.events and env.store
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"secret found in {where}"
    assert "BEGIN OPENSSH PRIVATE KEY" not in "".join(haystacks.values())


async def test_cancelling_the_caller_releases_and_fails_the_record(env: Env) -> None:
    env.standin.engine.fail_next(1, "timeout", hang_s=30)
    async with DerivativesEngineClient(env.standin.url, allocate_timeout_s=30) as patient:
        env.service.backends = BackendRouter(patient)
        task = asyncio.create_task(env.service.provision("c1", gpu_request()))
        await env.standin.engine.wait_for_allocation()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    record = env.service.get("c1")
    assert record.state is ComputeState.FAILED and record.termination_reason is TerminationReason.CANCELLED
    assert env.standin.engine.active_allocations() == []


async def test_cancellation_while_announcing_running_releases_the_machine(env: Env) -> None:
    announced = asyncio.Event()

    async def slow_sink(event: ComputeEvent) -> None:
        env.events.append(event)
        if event.state is ComputeState.RUNNING:
            announced.set()
            await asyncio.Event().wait()  # the event bus hangs

    env.service._events = slow_sink
    task = asyncio.create_task(env.service.provision("a1", gpu_request()))
    await announced.wait()
    assert len(env.standin.engine.active_allocations()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = env.service.get("a1")
    assert record.state is ComputeState.TERMINATED and record.termination_reason is TerminationReason.CANCELLED
    assert env.standin.engine.active_allocations() == []
