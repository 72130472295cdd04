"""The executor path in process (handler -> fence -> scheduler -> execute -> results) with a provisioner double:
replays do not re-apply, a delete wins over a create still retrying or still in its backend call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pipeline.command_scheduler import CommandScheduler, Sleep, is_replay
from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_COMMANDS
from pipeline.events.models import CommandAction, ProvisioningCommand, TenantCreated, TenantDeleted, Tier
from pipeline.executor import RetryPolicy, execute
from pipeline.outputs import Emit
from pipeline.provisioners.base import RESOURCES, DeleteResult, ResourcePlan, TenantSpec, VerifyResult
from pipeline.provisioners.errors import TransientError
from pipeline.tenants.logic import (
    TenantStores,
    command_fence,
    handle_provisioning_result,
    handle_tenant_created,
    handle_tenant_deleted,
)
from pipeline.tenants.models import ResourceState
from tests.pipeline.tenants.conftest import NOW, quota_for_tier

STARTED = NOW + timedelta(days=30)  # the worker started long after the replayed events
#: Backoffs long enough that a test passing through one would show (they are never waited out here).
SLOW_RETRIES = RetryPolicy(max_attempts=5, base_delay=10, max_delay=10)


class Backend:
    """Every resource of every tenant, as the backends would hold them."""

    def __init__(self) -> None:
        self.existing: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str, str]] = []
        self.verifying = 0
        self.max_verifying = 0


class Double:
    """A provisioner over :class:`Backend`. ``gate`` (if set) holds every apply until it is opened; ``failures``
    makes the first applies fail transiently."""

    def __init__(self, resource: str, backend: Backend, data_bearing: bool = False) -> None:
        self.resource, self.backend, self.data_bearing = resource, backend, data_bearing
        self.gate: asyncio.Event | None = None
        self.applying = asyncio.Event()
        self.failures = 0
        self.verify_gate: asyncio.Event | None = None

    def plan(self, tenant: TenantSpec) -> ResourcePlan:
        return ResourcePlan(resource=self.resource, tenant_id=tenant.tenant_id, tier=tenant.tier,
                            data_bearing=self.data_bearing, names={}, settings={})

    async def apply(self, tenant: TenantSpec) -> ResourcePlan:
        self.backend.calls.append(("apply", self.resource, tenant.tenant_id))
        self.applying.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise TransientError("connection refused")
        self.backend.existing.add((self.resource, tenant.tenant_id))
        return self.plan(tenant)

    async def verify(self, tenant: TenantSpec) -> VerifyResult:
        self.backend.calls.append(("verify", self.resource, tenant.tenant_id))
        self.backend.verifying += 1
        self.backend.max_verifying = max(self.backend.max_verifying, self.backend.verifying)
        try:
            await asyncio.sleep(0)
            if self.verify_gate is not None:
                await self.verify_gate.wait()
            exists = (self.resource, tenant.tenant_id) in self.backend.existing
            return VerifyResult(resource=self.resource, tenant_id=tenant.tenant_id, exists=exists)
        finally:
            self.backend.verifying -= 1

    async def delete(self, tenant: TenantSpec, purge: bool = False) -> DeleteResult:
        self.backend.calls.append(("delete", self.resource, tenant.tenant_id))
        self.backend.existing.discard((self.resource, tenant.tenant_id))
        return DeleteResult(resource=self.resource, tenant_id=tenant.tenant_id)

    async def aclose(self) -> None:
        return None


class Worker:
    """What the tenant-created/-deleted, executor and provisioning-results agents do, in one process."""

    def __init__(self, stores: TenantStores, backend: Backend, replay_concurrency: int = 2, replay_backlog: int = 1000,
                 policy: RetryPolicy = SLOW_RETRIES) -> None:
        self.stores = stores
        self.provisioners = {r: Double(r, backend) for r in RESOURCES}
        self.policy = policy
        self.fenced: list[ProvisioningResult] = []
        self.scheduler = CommandScheduler(self._run, 8, replay_concurrency, replay_backlog)

    async def _report(self, result: ProvisioningResult) -> None:
        handle_provisioning_result(result, self.stores, datetime.now(UTC))

    async def _run(self, command: ProvisioningCommand, verify_first: bool, sleep: Sleep) -> ProvisioningResult:
        result = await execute(command, self.provisioners, self._report, self.policy, sleep=sleep,
                               fence=lambda c: command_fence(c, self.stores), verify_first=verify_first)
        if result.status == "fenced":
            self.fenced.append(result)
        return result

    def handle(self, emits: list[Emit]) -> list[bool]:
        started = []
        for emit in emits:
            if emit.topic != PROVISIONING_COMMANDS or not isinstance(emit.value, ProvisioningCommand):
                continue
            command = emit.value
            if command_fence(command, self.stores) is not None:
                continue
            tenant = self.stores.tenants.get(command.tenant_id)
            assert tenant is not None
            when = tenant.deleted_at if command.action is CommandAction.DELETE else tenant.created_at
            started.append(self.scheduler.start(command, is_replay(command, when, STARTED)))
        return started


def created(tenant_id: str, at: datetime, event_id: str | None = None) -> TenantCreated:
    return TenantCreated(event_id=event_id or f"created-{tenant_id}", tenant_id=tenant_id, occurred_at=at,
                         name=tenant_id, tier=Tier.STANDARD, owner_user_id="alice")


async def settle(until: Callable[[], bool] | None = None) -> None:
    for _ in range(200):
        await asyncio.sleep(0)
        if until is not None and until():
            return


async def test_replaying_history_into_a_fresh_state_verifies_and_applies_nothing(stores: TenantStores) -> None:
    """A new consumer group: empty tables, every tenant-created event ever written read again, and the
    tenants' resources all exist. Each command verifies (a bounded number at a time) and is ready; no apply."""
    backend = Backend()
    tenants = [f"old-{i}" for i in range(40)]
    backend.existing = {(r, t) for r in RESOURCES for t in tenants}
    worker = Worker(stores, backend, replay_concurrency=3)

    for i, tenant_id in enumerate(tenants):
        worker.handle(handle_tenant_created(created(tenant_id, NOW + timedelta(minutes=i)), stores, quota_for_tier,
                                            NOW))
    await worker.scheduler.drain()

    assert [c for c in backend.calls if c[0] != "verify"] == []
    assert len(backend.calls) == len(tenants) * len(RESOURCES)
    assert 1 < backend.max_verifying <= 3
    for tenant_id in tenants:
        status = stores.status.get(tenant_id)
        assert status is not None and status.overall == "ready"


async def test_replaying_history_where_the_status_says_ready_sends_no_command(stores: TenantStores) -> None:
    """The same replay into a state that recorded everything (the dedupe table forgot the event ids): no
    command at all, so no apply and no verify (the reconciler verifies on its own schedule)."""
    backend = Backend()
    worker = Worker(stores, backend)
    events = [created(f"t-{i}", NOW) for i in range(20)]
    for event in events:
        worker.handle(handle_tenant_created(event, stores, quota_for_tier, NOW))
    await worker.scheduler.drain()
    backend.calls.clear()

    for event in events:
        assert worker.handle(handle_tenant_created(event, stores, quota_for_tier, NOW)) == []
    await worker.scheduler.drain()
    assert backend.calls == []


async def test_the_replay_backlog_is_bounded_and_new_events_do_not_wait_behind_it(stores: TenantStores) -> None:
    backend = Backend()
    worker = Worker(stores, backend, replay_concurrency=2, replay_backlog=10)
    gate = asyncio.Event()
    for double in worker.provisioners.values():
        double.verify_gate = gate  # the replay's verifies hang until the end of the test

    accepted = []
    for i in range(5):
        accepted += worker.handle(handle_tenant_created(created(f"old-{i}", NOW), stores, quota_for_tier, NOW))
    assert accepted.count(True) == 10 and accepted.count(False) == 25
    assert worker.scheduler.replays_queued == 10
    deferred = stores.status.get("old-4")
    assert deferred is not None and {s.status for s in deferred.resources.values()} == {ResourceState.PENDING}

    worker.handle(handle_tenant_created(created("new", STARTED + timedelta(seconds=1)), stores, quota_for_tier, NOW))
    await settle(lambda: (s := stores.status.get("new")) is not None and s.overall == "ready")
    status = stores.status.get("new")
    assert status is not None and status.overall == "ready"
    assert backend.max_verifying <= 2
    gate.set()
    await worker.scheduler.drain()


async def test_a_delete_wakes_a_create_backing_off_and_it_never_reaches_the_backend_again(
    stores: TenantStores,
) -> None:
    backend = Backend()
    worker = Worker(stores, backend)
    s3 = worker.provisioners["s3"]
    s3.failures = 1  # the create's first attempt fails; it backs off for 10 s
    worker.handle(handle_tenant_created(created("acme", STARTED + timedelta(seconds=1)), stores, quota_for_tier,
                                        NOW))
    await settle(lambda: (s := stores.status.get("acme")) is not None
                 and s.resources["s3"].status is ResourceState.RETRYING)

    delete = TenantDeleted(event_id="d1", tenant_id="acme", occurred_at=STARTED + timedelta(seconds=2), purge=True)
    worker.handle(handle_tenant_deleted(delete, stores, NOW))
    await worker.scheduler.drain()

    assert [c[0] for c in backend.calls if c[1] == "s3"] == ["apply", "delete"]
    assert backend.existing == set()
    status = stores.status.get("acme")
    assert status is not None and status.overall == "deleted"


async def test_a_delete_waits_for_a_create_in_its_backend_call_and_removes_what_it_made(
    stores: TenantStores,
) -> None:
    backend = Backend()
    worker = Worker(stores, backend)
    s3 = worker.provisioners["s3"]
    s3.gate = asyncio.Event()
    s3.failures = 1  # the in-flight attempt fails: its retry must meet the fence, not the backend
    worker.handle(handle_tenant_created(created("acme", STARTED + timedelta(seconds=1)), stores, quota_for_tier,
                                        NOW))
    await asyncio.wait_for(s3.applying.wait(), 5)

    delete = TenantDeleted(event_id="d1", tenant_id="acme", occurred_at=STARTED + timedelta(seconds=2), purge=True)
    worker.handle(handle_tenant_deleted(delete, stores, NOW))
    await settle()
    assert ("delete", "s3", "acme") not in backend.calls  # waits for the create's call to end
    s3.gate.set()
    await worker.scheduler.drain()

    assert [c[0] for c in backend.calls if c[1] == "s3"] == ["apply", "delete"]
    assert [r.resource for r in worker.fenced] == ["s3"]
    assert backend.existing == set()


async def test_a_late_create_that_completes_before_the_delete_is_removed_by_it(stores: TenantStores) -> None:
    backend = Backend()
    worker = Worker(stores, backend)
    s3 = worker.provisioners["s3"]
    s3.gate = asyncio.Event()
    worker.handle(handle_tenant_created(created("acme", STARTED + timedelta(seconds=1)), stores, quota_for_tier,
                                        NOW))
    await asyncio.wait_for(s3.applying.wait(), 5)
    delete = TenantDeleted(event_id="d1", tenant_id="acme", occurred_at=STARTED + timedelta(seconds=2), purge=True)
    worker.handle(handle_tenant_deleted(delete, stores, NOW))
    s3.gate.set()  # the create's apply succeeds after the delete arrived
    await worker.scheduler.drain()
    assert [c[0] for c in backend.calls if c[1] == "s3"] == ["apply", "delete"]
    assert backend.existing == set()


def test_only_commands_of_events_before_the_start_are_replays() -> None:
    command = ProvisioningCommand(command_id="c", tenant_id="acme", resource="s3", action=CommandAction.CREATE,
                                  issued_at=NOW, cause_event_id="e")
    assert is_replay(command, NOW, STARTED) and not is_replay(command, STARTED, STARTED)
    assert not is_replay(command, None, STARTED)
    quota = command.model_copy(update={"action": CommandAction.UPDATE_QUOTA})
    assert not is_replay(quota, NOW, STARTED)


