"""The executor waiting for a backend it cannot reach: ``waiting`` status, attempts not spent, the wait limit,
the fence, and how a waiting resource shows in the tenant's status (issue #16)."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_EVENTS
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.executor import RetryPolicy, execute
from pipeline.provisioners.errors import BackendUnavailable, PermanentError, TransientError
from pipeline.tenants.logic import TenantStores, handle_provisioning_result, handle_tenant_created
from pipeline.tenants.models import (
    ProvisioningStatus,
    QuotaRecord,
    ResourceState,
    ResourceStatus,
    TenantRecord,
    UserRecord,
)
from pipeline.tenants.reconcile import tenant_pass
from pipeline.typed_table import TypedTable
from tests.pipeline.tenants.conftest import NOW, quota_for_tier, tenant_created
from tests.pipeline.test_executor import FlakyProvisioner, command

ADDRESS = "10.0.0.7:9042"


def unavailable() -> BackendUnavailable:
    return BackendUnavailable("NoHostAvailable: connection refused", resource="cassandra", address=ADDRESS)


class Clock:
    """A monotonic clock the fake sleep advances: the wait limit is tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def run(failures: list[Exception], *, attempts: int = 3, wait: float = 1800.0,
              fence: Any = None) -> tuple[list[ProvisioningResult], ProvisioningResult, FlakyProvisioner, Clock]:
    provisioner = FlakyProvisioner(failures)
    reports: list[ProvisioningResult] = []
    clock = Clock()

    async def report(result: ProvisioningResult) -> None:
        reports.append(result)

    final = await execute(command(), {"cassandra": provisioner}, report,
                          RetryPolicy(max_attempts=attempts, base_delay=1, max_delay=8, backend_wait=wait),
                          random.Random(3), clock.sleep, fence=fence, clock=clock)
    return reports, final, provisioner, clock


async def test_an_unreachable_backend_is_waited_for_without_spending_attempts_then_ready() -> None:
    reports, final, provisioner, clock = await run([unavailable() for _ in range(5)], attempts=1)
    # One attempt allowed, five unreachable tries before it: none of them counted.
    assert [r.status for r in reports] == ["provisioning", "waiting", "ready"]
    assert final.status == "ready" and final.attempts == 1
    assert provisioner.calls == 6
    assert len(clock.sleeps) == 5 and all(0 <= s <= 8 for s in clock.sleeps)
    waiting = reports[1]
    assert waiting.attempts == 0
    assert waiting.error is not None and waiting.error.startswith(f"waiting for backend cassandra at {ADDRESS}")
    assert "connection refused" in waiting.error


async def test_waiting_and_retrying_alternate_and_only_reachable_failures_count() -> None:
    failures: list[Exception] = [unavailable(), unavailable(), TransientError("HTTP 503"), unavailable(),
                                 TransientError("HTTP 429")]
    reports, final, provisioner, _ = await run(failures, attempts=3)
    assert [r.status for r in reports] == ["provisioning", "waiting", "retrying", "waiting", "retrying", "ready"]
    assert [r.attempts for r in reports] == [0, 0, 1, 1, 2, 3]
    assert final.status == "ready" and provisioner.calls == 6


async def test_reachable_transient_errors_still_give_up_after_the_attempts() -> None:
    reports, final, _, _ = await run([unavailable(), TransientError("HTTP 503"), TransientError("HTTP 503")],
                                     attempts=2)
    assert [r.status for r in reports] == ["provisioning", "waiting", "retrying", "failed"]
    assert final.attempts == 2 and final.error is not None and final.error.startswith("gave up after 2 attempts")


async def test_a_permanent_error_after_waiting_fails_at_once() -> None:
    reports, final, _, _ = await run([unavailable(), PermanentError("HTTP 403")])
    assert [r.status for r in reports] == ["provisioning", "waiting", "failed"]
    assert final.attempts == 1 and final.error == "HTTP 403"


async def test_the_wait_limit_fails_the_command_with_a_clear_error() -> None:
    reports, final, provisioner, clock = await run([unavailable() for _ in range(10_000)], wait=60.0)
    assert [r.status for r in reports] == ["provisioning", "waiting", "failed"]
    assert final.status == "failed" and final.attempts == 0
    assert final.error is not None
    assert f"gave up waiting for backend cassandra at {ADDRESS} after 60 s" in final.error
    assert "PROVISIONING_BACKEND_WAIT_SECONDS=60" in final.error and "connection refused" in final.error
    assert final.detail == {"backend_unavailable": True}
    # It waited exactly the limit (the last backoff is cut to it), trying again after every backoff.
    assert sum(clock.sleeps) == pytest.approx(60.0)
    assert provisioner.calls == len(clock.sleeps) + 1


async def test_a_zero_wait_limit_fails_on_the_first_unreachable_try() -> None:
    reports, final, provisioner, clock = await run([unavailable()], wait=0.0)
    assert [r.status for r in reports] == ["provisioning", "waiting", "failed"]
    assert provisioner.calls == 1 and clock.sleeps == [] and final.attempts == 0


async def test_the_fence_is_asked_before_every_try_while_waiting() -> None:
    asked: list[int] = []

    def fence(_: ProvisioningCommand) -> str | None:
        asked.append(1)
        return "tenant acme is being deleted" if len(asked) == 4 else None

    reports, final, provisioner, _ = await run([unavailable() for _ in range(100)], fence=fence)
    assert final.status == "fenced" and final.error == "tenant acme is being deleted"
    # Asked at arrival, before the 2nd and the 3rd try, and before the 4th, which it stopped.
    assert len(asked) == 4 and provisioner.calls == 3
    assert [r.status for r in reports] == ["provisioning", "waiting"]  # a fenced command reports nothing more


async def test_one_log_line_when_waiting_starts_and_one_when_the_backend_joins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline.executor"):
        await run([unavailable() for _ in range(7)])
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.executor"]
    waiting = [line for line in lines if " waiting after " in line]
    joined = [line for line in lines if "joined" in line]
    assert len(waiting) == 1 and f"waiting for backend cassandra at {ADDRESS}" in waiting[0]
    assert len(joined) == 1 and "backend cassandra joined" in joined[0]
    assert any("cassandra create ready after 1 attempt(s)" in line for line in lines)


async def test_giving_up_waiting_is_not_logged_as_joined(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline.executor"):
        await run([unavailable() for _ in range(1000)], wait=5.0)
    assert not [r for r in caplog.records if "joined" in r.getMessage()]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["unavailable", "transient"]), max_size=25), st.integers(1, 6))
async def test_property_only_tries_that_reach_the_backend_spend_attempts(outcomes: list[str], attempts: int) -> None:
    failures: list[Exception] = [unavailable() if o == "unavailable" else TransientError("HTTP 503")
                                 for o in outcomes]
    reports, final, provisioner, _ = await run(failures, attempts=attempts)
    reached = outcomes.count("transient")
    statuses = [r.status for r in reports]
    if reached < attempts:  # the unreachable tries never exhaust the attempts: the command ends ready
        assert final.status == "ready" and final.attempts == reached + 1
        assert provisioner.calls == len(outcomes) + 1
    else:  # given up after exactly `attempts` reachable failures, whatever the unreachable tries around them
        assert final.status == "failed" and final.attempts == attempts
        assert final.error is not None and final.error.startswith(f"gave up after {attempts} attempts")
    assert "failed" not in statuses[:-1]
    # `waiting` is reported once per spell of unreachable tries (a reachable answer ends a spell).
    tried = outcomes[:provisioner.calls]
    spells = sum(1 for i, o in enumerate(tried) if o == "unavailable" and (i == 0 or tried[i - 1] != "unavailable"))
    assert statuses.count("waiting") == spells
    assert all(r.attempts <= attempts for r in reports)


# -- the status of a tenant with a waiting resource -----------------------------------------------------------


def entry(state: ResourceState) -> ResourceStatus:
    return ResourceStatus(resource="x", status=state, command_id="c", updated_at=datetime.now(UTC))


def test_a_waiting_resource_makes_the_tenant_waiting_never_failed() -> None:
    waiting = ProvisioningStatus(tenant_id="acme", resources={
        "cassandra": entry(ResourceState.READY), "elasticsearch": entry(ResourceState.WAITING),
        "s3": entry(ResourceState.PROVISIONING),
    })
    assert waiting.overall == "waiting"
    failed = ProvisioningStatus(tenant_id="acme", resources={
        "s3": entry(ResourceState.FAILED), "elasticsearch": entry(ResourceState.WAITING),
    })
    assert failed.overall == "failed"  # the worst resource still wins
    retrying = ProvisioningStatus(tenant_id="acme", resources={
        "s3": entry(ResourceState.RETRYING), "elasticsearch": entry(ResourceState.WAITING),
    })
    assert retrying.overall == "retrying"


def test_a_waiting_result_is_recorded_announced_and_restarted_when_stale() -> None:
    stores = TenantStores(tenants=TypedTable({}, TenantRecord), quotas=TypedTable({}, QuotaRecord),
                          status=TypedTable({}, ProvisioningStatus), users=TypedTable({}, UserRecord))
    creates = [e.value for e in handle_tenant_created(tenant_created(), stores, quota_for_tier, NOW)
               if isinstance(e.value, ProvisioningCommand)]
    search = next(c for c in creates if c.resource == "elasticsearch")
    emits = handle_provisioning_result(
        ProvisioningResult(command_id=search.command_id, tenant_id="acme", resource="elasticsearch",
                           action=CommandAction.CREATE, status="waiting", attempts=0, at=NOW,
                           error="waiting for backend elasticsearch at http://127.0.0.1:9200"),
        stores, NOW)
    status = stores.status.get("acme")
    assert status is not None
    recorded = status.resources["elasticsearch"]
    assert recorded.status is ResourceState.WAITING
    assert recorded.last_error == "waiting for backend elasticsearch at http://127.0.0.1:9200"
    announced = [e.value for e in emits if e.topic == PROVISIONING_EVENTS]
    assert [(e.resource, e.status, e.previous_status) for e in announced] == [("elasticsearch", "waiting", "pending")]
    # A worker that died while waiting leaves the entry stale: the reconciler restarts it (same command id).
    later = NOW + timedelta(hours=1)
    work = tenant_pass(stores, "acme", set(), later, later, NOW, set())
    assert search.command_id in {c.command_id for c in work.restart}
    running = tenant_pass(stores, "acme", {search.command_id}, later, later, NOW, set())
    assert search.command_id not in {c.command_id for c in running.restart}
