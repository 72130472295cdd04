"""The compute runtime of a worker (pipeline/compute/runtime.py) over a dict table and the in-process stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.compute.access import AccessConfig, AccessDetails, AccessSecrets
from pipeline.compute.backend import AccessSetup
from pipeline.compute.catalog import PACKAGED_CATALOG_DIR, Offer, load_catalogs, real_catalog_paths
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.factory import build_runtime, catalog_paths, tenant_policy
from pipeline.compute.lifecycle import ComputeEvent, ComputeRecord, ComputeState, TerminationReason, transition
from pipeline.compute.optimizer import ExclusionReason, NoFeasibleOffer
from pipeline.compute.record_store import TopicRecordStore, apply_record, supersedes
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import event_request_id, new_request_id, record_key, tenant_of
from pipeline.compute.runtime import ComputeRuntime, month_start, status_event, utilization_of
from pipeline.compute.vault import AccessVault
from pipeline.config import Settings
from pipeline.events.models import ComputeRequested, ResourceMetrics
from pipeline.typed_table import TypedTable
from tests.pipeline.compute.support import runtime_env

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CHEAPEST = "lambda/asia-northeast-1/gpu_4x_h100_sxm5/on_demand"


def gpu_request(tenant: str = "acme", count: int = 4, **kw: object) -> ComputeRequest:
    body: dict[str, object] = {"tenant_id": tenant, "resources": {"gpu": {"type": "H100", "count": count}},
                               "duration_hours": 6, "purpose": "training"}
    body.update(kw)
    return ComputeRequest.model_validate(body)


def requested(request_id: str = "acme.r1", at: datetime = T0) -> ComputeRecord:
    return ComputeRecord.new(request_id, gpu_request(), at)


def event(**kw: object) -> ComputeRequested:
    body: dict[str, object] = {"event_id": "evt-1", "tenant_id": "acme", "occurred_at": T0.isoformat(),
                               "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6}
    body.update(kw)
    return ComputeRequested.model_validate(body)


# -- ids, table ------------------------------------------------------------------------------------------


def test_request_ids_name_their_tenant() -> None:
    request_id = new_request_id("acme-labs")
    assert tenant_of(request_id) == "acme-labs" and record_key(request_id) == f"acme-labs/{request_id}"
    assert new_request_id("acme") != new_request_id("acme")
    for malformed in ("acme", "ACME.x", "acme.", ".x", "acme/x.y", "acme.x.y", "a" * 41 + ".x"):
        assert tenant_of(malformed) is None and record_key(malformed) is None
    assert event_request_id(event()) == event_request_id(event(occurred_at=T0.isoformat()))  # redelivery
    assert event_request_id(event()) != event_request_id(event(event_id="evt-2"))
    assert event_request_id(event(request_name="nightly-42")) == "acme.nightly-42"


def test_records_only_move_forward() -> None:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord)
    first = requested()
    allocating = transition(first, ComputeState.ALLOCATING, T0 + timedelta(seconds=1))
    failed = transition(allocating, ComputeState.FAILED, T0 + timedelta(seconds=2))
    assert apply_record(table, allocating) and table.get("acme/acme.r1") == allocating
    assert not apply_record(table, first)  # a late, older write
    assert apply_record(table, failed)
    late = transition(allocating, ComputeState.PROVISIONING, T0 + timedelta(seconds=3))
    assert len(late.history) == len(failed.history) and late.updated_at > failed.updated_at
    assert not supersedes(late, failed)  # a finished record is never replaced by an unfinished one
    assert not apply_record(table, ComputeRecord.new("no-tenant", gpu_request(), T0))


async def test_store_reads_its_writes_and_sends_them_in_order() -> None:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord)
    sent: list[ComputeRecord] = []
    gate = asyncio.Event()
    ticks = [0.0]

    async def send(record: ComputeRecord) -> None:
        await gate.wait()
        sent.append(record)
        apply_record(table, record)

    store = TopicRecordStore(table, send, clock=lambda: ticks[0])
    first = requested()
    second = transition(first, ComputeState.ALLOCATING, T0)
    store["acme.r1"] = first
    store["acme.r1"] = second
    assert store.get("acme.r1") == second and table.get("acme/acme.r1") is None  # read your writes
    assert [r.request_id for r in store.values()] == ["acme.r1"] and store.pending == 2
    gate.set()
    await store.flush()
    assert sent == [first, second] and table.get("acme/acme.r1") == second
    store.applied(first)  # not the latest write: the overlay keeps it
    assert store.trim(lambda _: False, older_than_s=60) == 0  # too recent
    ticks[0] = 61.0
    assert store.trim(lambda _: True, older_than_s=60) == 0  # still worked on here
    store.applied(second)
    assert store.get("acme.r1") == second  # now from the table
    await store.close()


async def test_the_overlay_outlives_a_lagging_table() -> None:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord)
    ticks = [0.0]

    async def send(record: ComputeRecord) -> None:  # the agent is behind: nothing reaches the table
        return None

    store = TopicRecordStore(table, send, clock=lambda: ticks[0])
    first = requested()
    store["acme.r1"] = first
    await store.flush()
    ticks[0] = 120.0
    assert store.trim(lambda _: False) == 0 and store.get("acme.r1") == first  # the table does not have it yet
    apply_record(table, first)  # caught up (its applied() call was missed)
    assert store.trim(lambda _: False) == 1
    later = transition(first, ComputeState.ALLOCATING, T0)
    store["acme.r1"] = later
    await store.flush()
    ticks[0] = 120.0 + 3601
    assert store.trim(lambda _: False) == 1  # given up: another worker owns the tenant now
    await store.close()


async def test_a_failing_sender_is_retried_and_does_not_block_later_writes() -> None:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord)
    calls: list[str] = []

    async def send(record: ComputeRecord) -> None:
        calls.append(record.request_id)
        if record.request_id == "acme.bad":
            raise ConnectionError("broker down")
        apply_record(table, record)

    store = TopicRecordStore(table, send, retries=3, retry_delay_s=0)
    store["acme.bad"] = requested("acme.bad")
    store["acme.ok"] = requested("acme.ok")
    await store.flush()
    assert calls == ["acme.bad"] * 3 + ["acme.ok"] and table.get("acme/acme.ok") is not None
    assert store.get("acme.bad") is not None  # kept in memory here
    await store.close()


def test_store_values_leave_out_records_finished_before_the_budget_period() -> None:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord)
    old = transition(requested("acme.old", T0 - timedelta(days=40)), ComputeState.FAILED, T0 - timedelta(days=40))
    recent = transition(requested("acme.new", T0), ComputeState.FAILED, T0)
    open_ = requested("acme.open", T0 - timedelta(days=40))
    for record in (old, recent, open_):
        apply_record(table, record)

    async def send(record: ComputeRecord) -> None:
        return None

    store = TopicRecordStore(table, send, finished_since=lambda: month_start(T0))
    assert sorted(r.request_id for r in store.values()) == ["acme.new", "acme.open"]
    assert store.get("acme.old") == old  # still readable by id
    assert month_start(T0) == datetime(2026, 5, 1, tzinfo=UTC)


async def test_a_tenants_listing_holds_every_record_of_it_old_or_unsent_and_no_other_tenants() -> None:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord)
    old = transition(requested("acme.old", T0 - timedelta(days=40)), ComputeState.FAILED, T0 - timedelta(days=40))
    for record in (old, requested("acme-labs.x", T0), requested("globex.y", T0)):
        apply_record(table, record)

    async def send(record: ComputeRecord) -> None:
        return None

    store = TopicRecordStore(table, send, finished_since=lambda: month_start(T0))
    store["acme.unsent"] = requested("acme.unsent", T0)  # in the overlay only, not yet in the table
    assert "acme.old" not in {r.request_id for r in store.values() if r.tenant_id == "acme"}
    table.backend["acme/acme.broken"] = {"request_id": "acme.broken"}  # no longer validates: read as absent
    assert sorted(r.request_id for r in store.of_tenant("acme")) == ["acme.old", "acme.unsent"]
    assert [r.request_id for r in store.of_tenant("globex")] == ["globex.y"]
    await store.close()


def test_access_vault_hands_out_once_and_expires() -> None:
    ticks = [0.0]
    vault = AccessVault(ttl_s=60, clock=lambda: ticks[0])
    secrets_ = AccessSecrets.generate()
    access = AccessDetails.build(secrets_, allocation_id="a1", request_id="acme.r1", host="h", port=22,
                                 config=AccessConfig())
    vault.deposit("acme.r1", access)
    vault.deposit("acme.r2", access)
    assert vault.holds("acme.r1") and len(vault) == 2
    assert vault.claim("acme.r1") == access
    assert vault.claim("acme.r1") is None and not vault.holds("acme.r1")
    ticks[0] = 61.0
    assert not vault.holds("acme.r2") and vault.claim("acme.r2") is None
    vault.deposit("acme.r3", access)
    ticks[0] = 200.0
    assert vault.expire() == ["acme.r3"] and len(vault) == 0


def test_status_event_names_the_previous_state_and_is_deterministic() -> None:
    allocating = transition(requested(), ComputeState.ALLOCATING, T0)
    record = transition(allocating, ComputeState.FAILED, T0, reason="allocation_failed", error="token=abc123 x")
    compute_event = ComputeEvent(request_id=record.request_id, tenant_id="acme", state=record.state, at=T0,
                                 error=record.error)
    status = status_event(compute_event, record)
    assert (status.kind, status.resource, status.status, status.previous_status) == (
        "compute-status", "compute", "failed", "allocating")
    assert status.detail["request_id"] == "acme.r1" and "abc123" not in json.dumps(status.detail)
    assert status.event_id == status_event(compute_event, record).event_id


def test_utilization_is_the_busier_of_gpus_and_cpus(real_offers: list[Offer]) -> None:
    offer = next(o for o in real_offers if o.gpu_name == "H100" and o.gpu_count == 8)
    record = requested().model_copy(update={"offer": offer})

    def sample(gpus: float, cpus: float) -> ResourceMetrics:
        return ResourceMetrics(event_id="m", tenant_id="acme", occurred_at=T0, workload="acme.r1",
                               cpu_cores=cpus, memory_gib=1, gpus=gpus)

    assert utilization_of(record, sample(4, 0)) == 0.5
    assert utilization_of(record, sample(0, offer.vcpus)) == 1.0
    assert utilization_of(record, sample(16, 0)) == 1.0
    assert utilization_of(requested(), sample(4, 4)) == 0.0


# -- settings ---------------------------------------------------------------------------------------------


def test_catalogs_and_policies_come_from_settings(tmp_path: Path) -> None:
    packaged = catalog_paths(Settings(compute_catalog_dir=None))
    assert [p.name for p in packaged] == ["lambda_vms.v8.csv", "nebius_vms.v8.csv", "verda_vms.v8.csv"]
    assert packaged == real_catalog_paths(PACKAGED_CATALOG_DIR)
    # What the worker loads by default (the counts of the upstream files: NOTICE).
    assert len(load_catalogs(packaged)) == 532
    copies = tmp_path / "copies"
    copies.mkdir()
    for path in packaged:
        (copies / path.name).write_bytes(path.read_bytes())
    assert catalog_paths(Settings(compute_catalog_dir=copies)) == [copies / p.name for p in packaged]
    extra = tmp_path / "mycloud.csv"
    extra.write_text("InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region\n"
                     "m1,H100,1,8,64,1.0,home\n")
    assert catalog_paths(Settings(compute_extra_catalogs=[extra]))[-1] == extra
    settings = Settings(compute_tenant_policies={"*": {"budget_usd": 100},
                                                 "acme": {"max_gpus": 2, "discounts": {"lambda": 0.2}}})
    acme = tenant_policy(settings, "acme", 8)
    assert (acme.max_gpus, acme.budget_usd, acme.discounts) == (2, None, {"lambda": 0.2})
    other = tenant_policy(settings, "other", 4)
    assert (other.max_gpus, other.budget_usd) == (4, 100)
    assert tenant_policy(settings, "ghost", None).max_gpus == 0  # no quota record: no GPU


async def test_build_runtime_merges_the_kubernetes_shapes(real_offers: list[Offer]) -> None:
    settings = Settings(compute_kubernetes={
        "price_per_gpu_hour": {"H100": 1.0},
        "shapes": [{"name": "h100-x1", "gpu_name": "H100", "gpu_count": 1, "vcpus": 8, "memory_gib": 64}],
    })

    async def send(_: object) -> None:
        return None

    runtime = build_runtime(settings, table=TypedTable({}, ComputeRecord), send_record=send, send_status=send,
                            quota_gpus=lambda _: 4, quotas=lambda _: None,
                            engine=DerivativesEngineClient("http://127.0.0.1:9"), offers=real_offers)
    offer = runtime.service.book.get("kubernetes/in-house/h100-x1/on_demand")
    assert offer is not None and offer.price_per_hour == pytest.approx(1.0 + 8 * 0.02 + 64 * 0.003)
    assert runtime.service.backends.for_offer(offer) is not runtime.engine
    assert await runtime.refresh_offers() is None  # nothing answers on port 9: a warning, not a crash
    await runtime.close()


async def test_no_kubernetes_offer_or_backend_while_kubernetes_is_disabled(real_offers: list[Offer]) -> None:
    shapes = {"price_per_gpu_hour": {"H100": 1.0},
              "shapes": [{"name": "h100-x1", "gpu_name": "H100", "gpu_count": 1, "vcpus": 8, "memory_gib": 64}]}

    async def send(_: object) -> None:
        return None

    def runtime(settings: Settings) -> ComputeRuntime:
        return build_runtime(settings, table=TypedTable({}, ComputeRecord), send_record=send, send_status=send,
                             quota_gpus=lambda _: 4, quotas=lambda _: None,
                             engine=DerivativesEngineClient("http://127.0.0.1:9"), offers=real_offers)

    on = runtime(Settings(compute_kubernetes=shapes))
    off = runtime(Settings(compute_kubernetes=shapes, kubernetes_enabled=False))
    assert on.service.book.get("kubernetes/in-house/h100-x1/on_demand") is not None
    assert not [o for o in off.service.book.offers() if o.provider == "kubernetes"]
    assert len(off.service.book.offers()) == len(on.service.book.offers()) - 1
    assert off.service.backends.by_provider == {} and "kubernetes" in on.service.backends.by_provider
    await on.close()
    await off.close()


async def test_an_absent_derivatives_engine_is_warned_about_once_not_on_every_refresh(
    real_offers: list[Offer], caplog: pytest.LogCaptureFixture,
) -> None:
    async def send(_: object) -> None:
        return None

    runtime = build_runtime(Settings(), table=TypedTable({}, ComputeRecord), send_record=send, send_status=send,
                            quota_gpus=lambda _: 4, quotas=lambda _: None,
                            engine=DerivativesEngineClient(f"http://127.0.0.1:{closed_port()}"), offers=real_offers)
    try:
        with caplog.at_level(logging.DEBUG, logger="pipeline.compute.runtime"):
            for _ in range(3):
                assert await runtime.refresh_offers() is None
    finally:
        await runtime.close()
    lines = [r for r in caplog.records if "could not refresh offers" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.DEBUG, logging.DEBUG]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the runtime against the stand-in ------------------------------------------------------------------


async def test_provision_runs_and_returns_the_access_details_once(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}) as env:
        outcome = await env.runtime.provision("acme.r1", gpu_request())
        assert outcome.finished and outcome.access is not None
        record = outcome.record
        assert record.state is ComputeState.RUNNING
        assert record.offer is not None and record.offer.offer_id == CHEAPEST
        assert env.runtime.claim("acme.r1") is None  # handed out with the answer, not kept
        stored = env.table.get("acme/acme.r1")
        assert stored == record and stored.access is not None
        assert [e.status for e in env.events] == ["requested", "allocating", "provisioning", "running"]
        private = outcome.access.ssh_private_key.get_secret_value()
        token = outcome.access.jupyter_token.get_secret_value()
        dumped = json.dumps([r.model_dump(mode="json") for r in env.written] +
                            [e.model_dump(mode="json") for e in env.events])
        assert private not in dumped and token not in dumped
        assert "token=***" in dumped
        view = env.runtime.capacity("acme")
        assert view.tenant is not None and (view.tenant.gpus_in_use, view.tenant.gpus_remaining) == (4, 4)
        done = await env.runtime.terminate("acme.r1")
        assert done.state is ComputeState.TERMINATED and env.standin.engine.active_allocations() == []


async def test_an_allocation_slower_than_the_wait_leaves_its_access_for_one_claim(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}) as env:
        outcome = await env.runtime.provision("acme.r1", gpu_request(), wait_s=0)
        assert not outcome.finished and outcome.access is None
        await asyncio.gather(*env.runtime._tasks.values())
        assert env.runtime.get("acme.r1").state is ComputeState.RUNNING
        assert env.runtime.vault.holds("acme.r1")
        access = env.runtime.claim("acme.r1")
        assert access is not None and access.allocation_id == env.runtime.get("acme.r1").allocation_id
        assert env.runtime.claim("acme.r1") is None


async def test_an_impossible_request_is_refused_with_its_reason_and_stored(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 2}) as env:
        with pytest.raises(NoFeasibleOffer) as refused:
            await env.runtime.provision("acme.r1", gpu_request())
        assert refused.value.constraint is ExclusionReason.QUOTA
        assert "may add 2 GPU(s)" in str(refused.value)
        stored = env.table.get("acme/acme.r1")
        assert stored is not None and stored.state is ComputeState.FAILED and stored.error == str(refused.value)
        assert [e.status for e in env.events] == ["failed"]


async def test_concurrent_requests_of_a_tenant_cannot_both_pass_its_gpu_quota(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 4}) as env:
        results = await asyncio.gather(
            env.runtime.provision("acme.a", gpu_request()), env.runtime.provision("acme.b", gpu_request()),
            return_exceptions=True,
        )
        outcomes = []
        for result in results:
            if isinstance(result, NoFeasibleOffer):  # refused at submit
                outcomes.append(("refused", result.constraint))
            elif isinstance(result, BaseException):
                raise result
            elif result.record.state is ComputeState.FAILED:  # refused when its allocation started
                assert result.record.decision is not None
                outcomes.append(("refused", result.record.decision.binding_constraint))
            else:
                outcomes.append((result.record.state.value, None))
        assert sorted(outcomes, key=str) == [("refused", ExclusionReason.QUOTA), ("running", None)]
        assert len(env.standin.engine.active_allocations()) == 1


async def test_an_event_is_submitted_once_and_allocated_in_the_background(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}) as env:
        first = await env.runtime.submit_event(event(request_name="train-1"))
        assert first is not None and first.request_id == "acme.train-1"
        assert await env.runtime.submit_event(event(request_name="train-1")) is None  # redelivered
        await asyncio.gather(*env.runtime._tasks.values())
        assert env.runtime.get("acme.train-1").state is ComputeState.RUNNING
        assert env.runtime.vault.holds("acme.train-1")
        refused = await env.runtime.submit_event(event(event_id="evt-9", resources={"gpu": {"type": "H100",
                                                                                             "count": 16}}))
        assert refused is not None and refused.state is ComputeState.FAILED and "gpu_count" in (refused.error or "")


async def test_the_sweep_starts_reservations_and_terminates_at_the_end_of_the_duration(
    real_offers: list[Offer],
) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}, clock=T0) as env:
        start = T0 + timedelta(hours=1)
        outcome = await env.runtime.provision("acme.res", gpu_request(start_at=start.isoformat(), duration_hours=2))
        assert not outcome.finished and outcome.record.state is ComputeState.REQUESTED
        assert (await env.runtime.tick())["started"] == 0
        env.clock[0] = start
        assert (await env.runtime.tick())["started"] == 1
        await asyncio.gather(*env.runtime._tasks.values())
        running = env.runtime.get("acme.res")
        assert running.state is ComputeState.RUNNING and running.ends_at == start + timedelta(hours=2)
        env.clock[0] = start + timedelta(hours=1)
        assert (await env.runtime.tick())["terminated"] == 0
        env.clock[0] = start + timedelta(hours=2)
        assert (await env.runtime.tick())["terminated"] == 1
        done = env.runtime.get("acme.res")
        assert done.termination_reason is TerminationReason.DURATION_ELAPSED
        assert env.standin.engine.active_allocations() == [] and not env.runtime.vault.holds("acme.res")


async def test_a_missed_reservation_fails_instead_of_starting_late(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}, clock=T0) as env:
        await env.runtime.provision("acme.res", gpu_request(start_at=(T0 + timedelta(hours=1)).isoformat(),
                                                             duration_hours=1))
        env.clock[0] = T0 + timedelta(hours=3)
        assert (await env.runtime.tick())["abandoned"] == 1
        assert env.runtime.get("acme.res").history[-1].reason == "reservation_missed"


async def test_the_sweep_fails_abandoned_requests_and_releases_what_they_hold(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}, clock=T0) as env:
        offer = next(o for o in real_offers if o.offer_id == CHEAPEST)
        secrets_ = AccessSecrets.generate()
        handle = await env.runtime.engine.allocate(  # type: ignore[union-attr]
            offer, gpu_request(), client_token="acme-dead-1",
            setup=AccessSetup(ssh_public_key=secrets_.ssh.public_key, jupyter_token=secrets_.jupyter_token),
        )
        record = transition(transition(requested("acme.dead", T0), ComputeState.ALLOCATING, T0),
                            ComputeState.PROVISIONING, T0, offer=offer, client_token="acme-dead-1",
                            allocation_id=handle.allocation_id)
        env.runtime.store["acme.dead"] = record  # what a worker that died mid-allocation left behind
        await env.runtime.store.flush()
        assert len(env.standin.engine.active_allocations()) == 1
        assert (await env.runtime.tick())["abandoned"] == 0  # not stale yet
        env.clock[0] = T0 + timedelta(seconds=env.runtime.stale_after_s)
        assert (await env.runtime.tick())["abandoned"] == 1
        assert env.runtime.get("acme.dead").state is ComputeState.FAILED
        assert env.standin.engine.active_allocations() == []


async def test_samples_of_a_running_allocation_keep_it_from_idling(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}, clock=T0, compute_idle_warning_seconds=300) as env:
        await env.runtime.provision("acme.r1", gpu_request(idle_termination={"after_minutes": 10,
                                                                             "below_utilization": 0.5}))
        await env.runtime.provision("acme.r2", gpu_request(count=1))  # not opted in

        def sample(at: datetime, gpus: float, workload: str = "acme.r1") -> ResourceMetrics:
            return ResourceMetrics(event_id=f"m{at.timestamp()}", tenant_id="acme", occurred_at=at,
                                   workload=workload, cpu_cores=0, memory_gib=1, gpus=gpus)

        busy_at = T0 + timedelta(seconds=500)
        changed = env.runtime.record_metrics(sample(busy_at, 3))
        assert changed is not None and changed.last_active_at == busy_at == changed.last_sample_at
        assert env.runtime.record_metrics(sample(busy_at + timedelta(seconds=5), 3)) is None  # within the step
        assert env.runtime.record_metrics(sample(busy_at, 3, workload="other.r1")) is None  # another tenant's
        assert env.runtime.record_metrics(sample(busy_at, 0, workload="acme.r2")) is None  # not opted in
        idle = env.runtime.record_metrics(sample(busy_at + timedelta(seconds=60), 1))  # 1 of 4 GPUs: idle
        assert idle is not None and idle.last_active_at == busy_at
        env.clock[0] = busy_at + timedelta(seconds=299)
        assert env.runtime.record_metrics(sample(env.clock[0], 1)) is not None
        assert (await env.runtime.tick())["terminated"] == 0
        assert not any(e.status == "idle-warning" for e in env.events)  # observed idle 299 s < 600 - 300
        env.clock[0] = busy_at + timedelta(seconds=300)
        assert env.runtime.record_metrics(sample(env.clock[0], 1)) is None  # within the step of the last one
        env.clock[0] = busy_at + timedelta(seconds=330)
        assert env.runtime.record_metrics(sample(env.clock[0], 1)) is not None
        assert (await env.runtime.tick())["terminated"] == 0
        warnings = [e for e in env.events if e.status == "idle-warning"]
        assert [(e.detail["request_id"], e.previous_status) for e in warnings] == [("acme.r1", "running")]
        env.clock[0] = busy_at + timedelta(seconds=630)
        assert env.runtime.record_metrics(sample(env.clock[0], 1)) is not None
        assert (await env.runtime.tick())["terminated"] == 1
        assert env.runtime.get("acme.r1").termination_reason is TerminationReason.IDLE
        assert env.runtime.get("acme.r2").state is ComputeState.RUNNING


def test_store_values_read_a_record_that_no_longer_validates_as_absent() -> None:
    table: TypedTable[ComputeRecord] = TypedTable({}, ComputeRecord)
    apply_record(table, requested("acme.ok", T0))
    table.backend["acme/acme.broken"] = {"request_id": "acme.broken", "state": "running"}
    table.backend["acme/acme.nan"] = requested("acme.nan", T0).model_dump(mode="json") | {"price_per_hour": "nan"}

    async def send(record: ComputeRecord) -> None:
        return None

    store = TopicRecordStore(table, send)
    assert [r.request_id for r in store.values()] == ["acme.ok"]


# -- a current quote before deciding (COMPUTE_QUOTE_ON_REQUEST) ------------------------------------------


async def test_with_quote_on_request_a_decision_sees_the_engines_current_capacity(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}, compute_quote_on_request=True) as env:
        request = gpu_request()
        assert env.runtime.quote(request)[0].chosen.offer_id == CHEAPEST  # type: ignore[union-attr]
        env.standin.engine.exhaust("lambda")  # after the worker's last full quote
        calls = env.runtime.engine.calls["quote"]  # type: ignore[union-attr]
        assert await env.runtime.refresh_for(request)
        assert env.runtime.engine.calls["quote"] == calls + 1  # type: ignore[union-attr]
        decision, _ = env.runtime.quote(request)
        assert CHEAPEST in decision.excluded[ExclusionReason.CAPACITY]
        assert decision.chosen is not None and decision.chosen.provider != "lambda"
        outcome = await env.runtime.provision("acme.fresh", request)
        assert outcome.record.state is ComputeState.RUNNING and outcome.record.offer is not None
        assert outcome.record.offer.provider != "lambda"
        assert [a.offer_id for a in outcome.record.attempts] == [decision.chosen.offer_id]  # no failed attempt


async def test_without_quote_on_request_the_book_of_the_last_refresh_decides(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}) as env:
        env.standin.engine.exhaust("lambda")
        calls = env.runtime.engine.calls["quote"]  # type: ignore[union-attr]
        assert not await env.runtime.refresh_for(gpu_request())
        assert env.runtime.engine.calls["quote"] == calls  # type: ignore[union-attr]
        assert env.runtime.quote(gpu_request())[0].chosen.offer_id == CHEAPEST  # type: ignore[union-attr]


async def test_an_engine_that_does_not_answer_leaves_the_decision_to_the_book(real_offers: list[Offer]) -> None:
    async with runtime_env(real_offers, quotas={"acme": 8}, compute_quote_on_request=True) as env:
        async with DerivativesEngineClient("http://127.0.0.1:9") as down:
            env.runtime.quotes = down
            assert not await env.runtime.refresh_for(gpu_request())
        assert env.runtime.quote(gpu_request())[0].chosen.offer_id == CHEAPEST  # type: ignore[union-attr]
