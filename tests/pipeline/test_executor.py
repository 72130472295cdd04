from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.contract.records import ProvisioningResult
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.executor import RetryPolicy, execute
from pipeline.provisioners.base import (
    DeleteResult,
    ResourcePlan,
    TenantSpec,
    UserAccessResult,
    UserGrant,
    UserRole,
    VerifyResult,
)
from pipeline.provisioners.errors import PermanentError, TransientError


class FlakyProvisioner:
    resource = "cassandra"
    data_bearing = True

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    def plan(self, tenant: TenantSpec) -> ResourcePlan:
        return ResourcePlan(resource="cassandra", tenant_id=tenant.tenant_id, tier=tenant.tier, data_bearing=True,
                            names={"keyspace": tenant.tenant_id}, settings={})

    async def apply(self, tenant: TenantSpec) -> ResourcePlan:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.plan(tenant)

    async def verify(self, tenant: TenantSpec) -> VerifyResult:
        return VerifyResult(resource="cassandra", tenant_id=tenant.tenant_id, exists=True)

    async def delete(self, tenant: TenantSpec, purge: bool = False) -> DeleteResult:
        return DeleteResult(resource="cassandra", tenant_id=tenant.tenant_id)

    async def aclose(self) -> None:
        return None


def command(tenant_id: str = "acme") -> ProvisioningCommand:
    return ProvisioningCommand(
        command_id="c1", tenant_id=tenant_id, resource="cassandra", action=CommandAction.CREATE,
        issued_at=datetime.now(UTC), cause_event_id="e1",
        spec={"name": "Acme", "tier": "standard", "owner_user_id": "alice",
              "quota": {"cpu_cores": 8, "memory_gib": 32, "gpus": 0, "storage_gib": 100}},
    )


async def run(provisioner: Any, cmd: ProvisioningCommand, attempts: int = 4) -> tuple[list[ProvisioningResult],
                                                                                      list[float]]:
    reports: list[ProvisioningResult] = []
    sleeps: list[float] = []

    async def report(result: ProvisioningResult) -> None:
        reports.append(result)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    await execute(cmd, {"cassandra": provisioner}, report, RetryPolicy(max_attempts=attempts, base_delay=1,
                  max_delay=5), random.Random(7), sleep)
    return reports, sleeps


async def test_transient_errors_are_retried_with_growing_jittered_backoff_then_ready() -> None:
    provisioner = FlakyProvisioner([TransientError("connection refused"), TransientError("timeout")])
    reports, sleeps = await run(provisioner, command())
    assert [r.status for r in reports] == ["provisioning", "retrying", "retrying", "ready"]
    assert reports[1].error is not None and "connection refused" in reports[1].error
    assert reports[-1].attempts == 3 and provisioner.calls == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1 and 0 <= sleeps[1] <= 2


async def test_permanent_errors_fail_at_once() -> None:
    provisioner = FlakyProvisioner([PermanentError("bad replication")])
    reports, sleeps = await run(provisioner, command())
    assert [r.status for r in reports] == ["provisioning", "failed"]
    assert sleeps == [] and provisioner.calls == 1


async def test_attempts_are_bounded_and_the_last_error_kept() -> None:
    provisioner = FlakyProvisioner([TransientError(f"down {i}") for i in range(10)])
    reports, _ = await run(provisioner, command(), attempts=3)
    assert reports[-1].status == "failed" and reports[-1].error is not None and "down 2" in reports[-1].error
    assert provisioner.calls == 3


async def test_unsafe_tenant_ids_are_refused_before_any_backend_call() -> None:
    provisioner = FlakyProvisioner([])
    reports, _ = await run(provisioner, command(tenant_id="acme").model_copy(update={"tenant_id": "../etc"}))
    assert [r.status for r in reports] == ["failed"] and provisioner.calls == 0


# -- user commands -------------------------------------------------------------------------------------------


class UserBackend(FlakyProvisioner):
    """A provisioner with per-user access: records grants, fails the first grants as told."""

    def __init__(self, failures: list[Exception], granted: bool = False) -> None:
        super().__init__([])
        self.grant_failures = failures
        self.grants: list[UserGrant] = []
        self.revokes: list[UserGrant] = []
        self.granted = granted

    async def grant_user(self, tenant: TenantSpec, user: UserGrant) -> dict[str, Any]:
        if self.grant_failures:
            raise self.grant_failures.pop(0)
        self.grants.append(user)
        return {"granted": user.role.value}

    async def revoke_user(self, tenant: TenantSpec, user: UserGrant) -> bool:
        self.revokes.append(user)
        return False

    async def verify_user(self, tenant: TenantSpec, user: UserGrant) -> UserAccessResult:
        return UserAccessResult(resource="cassandra", tenant_id=tenant.tenant_id, user_id=user.user_id,
                                missing=[] if self.granted else ["grant"])


def user_command(action: CommandAction, user: Any) -> ProvisioningCommand:
    return command().model_copy(update={"action": action, "spec": {**command().spec, "user": user}})


async def test_create_user_grants_the_users_highest_role_with_retries_and_delete_user_revokes() -> None:
    backend = UserBackend([TransientError("namespace does not exist (yet)")])
    bob = {"user_id": "bob@x.io", "email": "bob@x.io", "roles": ["viewer", "Admin", "other"]}
    reports, _ = await run(backend, user_command(CommandAction.CREATE_USER, bob))
    assert [r.status for r in reports] == ["provisioning", "retrying", "ready"]
    assert all(r.user_id == "bob@x.io" for r in reports)
    assert backend.grants == [UserGrant(user_id="bob@x.io", role=UserRole.ADMIN, email="bob@x.io")]
    assert backend.calls == 0
    reports, _ = await run(backend, user_command(CommandAction.DELETE_USER, bob))
    assert [r.status for r in reports] == ["provisioning", "deleted"]
    assert reports[-1].detail == {"user": "bob@x.io", "revoked": False}
    assert backend.revokes == [UserGrant(user_id="bob@x.io", role=UserRole.ADMIN, email="bob@x.io")]


async def test_a_user_command_on_a_backend_without_user_access_fails_permanently() -> None:
    reports, _ = await run(FlakyProvisioner([]), user_command(CommandAction.CREATE_USER, {"user_id": "bob"}))
    assert [r.status for r in reports] == ["provisioning", "failed"]
    assert reports[-1].error is not None and "no per-user access" in reports[-1].error


async def test_a_user_command_with_an_unsafe_or_missing_user_is_refused_before_any_backend_call() -> None:
    for user in ({"user_id": "bob/../admin"}, {"user_id": ""}, None, {"user_id": "bob", "roles": "admin"}):
        backend = UserBackend([])
        reports, _ = await run(backend, user_command(CommandAction.CREATE_USER, user))
        assert [r.status for r in reports] == ["failed"]
        assert reports[0].error is not None and reports[0].error.startswith("refused")
        assert backend.grants == [] and backend.revokes == []


# -- workload isolation (quarantine) ----------------------------------------------------------------------


class IsolatingBackend(FlakyProvisioner):
    """A provisioner that isolates workloads: records each call, fails the first ones as told."""

    def __init__(self, failures: list[Exception]) -> None:
        super().__init__([])
        self.isolation_failures = failures
        self.isolation: list[tuple[str, str]] = []

    async def quarantine_workload(self, tenant: TenantSpec, workload: str) -> dict[str, Any]:
        if self.isolation_failures:
            raise self.isolation_failures.pop(0)
        self.isolation.append(("quarantine", workload))
        return {"network_policy": f"quarantine-{workload}"}

    async def release_workload(self, tenant: TenantSpec, workload: str) -> dict[str, Any]:
        self.isolation.append(("release", workload))
        return {"policy_deleted": True}


def workload_command(action: CommandAction, workload: Any) -> ProvisioningCommand:
    return command().model_copy(update={"action": action, "spec": {**command().spec, "workload": workload}})


async def test_quarantine_and_release_commands_call_the_backend_with_retries() -> None:
    backend = IsolatingBackend([TransientError("connection reset")])
    reports, _ = await run(backend, workload_command(CommandAction.QUARANTINE, "api"))
    assert [r.status for r in reports] == ["provisioning", "retrying", "ready"]
    assert reports[-1].detail == {"network_policy": "quarantine-api"}
    reports, _ = await run(backend, workload_command(CommandAction.RELEASE_QUARANTINE, "api"))
    assert [r.status for r in reports] == ["provisioning", "ready"]
    assert backend.isolation == [("quarantine", "api"), ("release", "api")] and backend.calls == 0


async def test_a_workload_command_without_a_workload_or_isolation_is_refused_or_fails() -> None:
    for workload in (None, "", 7, "x" * 257):
        backend = IsolatingBackend([])
        reports, _ = await run(backend, workload_command(CommandAction.QUARANTINE, workload))
        assert [r.status for r in reports] == ["failed"]
        assert reports[0].error is not None and reports[0].error.startswith("refused")
        assert backend.isolation == []
    reports, _ = await run(FlakyProvisioner([]), workload_command(CommandAction.QUARANTINE, "api"))
    assert [r.status for r in reports] == ["provisioning", "failed"]
    assert reports[-1].error is not None and "cannot isolate a workload" in reports[-1].error


async def test_a_replayed_create_user_whose_grant_is_in_place_is_ready_without_a_grant() -> None:
    backend = UserBackend([], granted=True)
    reports: list[ProvisioningResult] = []

    async def report(result: ProvisioningResult) -> None:
        reports.append(result)

    await execute(user_command(CommandAction.CREATE_USER, {"user_id": "bob"}), {"cassandra": backend}, report,
                  verify_first=True)
    assert [r.status for r in reports] == ["provisioning", "ready"] and backend.grants == []


async def test_each_step_that_ends_or_retries_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.executor")
    provisioner = FlakyProvisioner([TransientError("connection refused")])
    await run(provisioner, command())
    lines = [r for r in caplog.records if r.name == "pipeline.executor"]
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    retrying, ready = (r.getMessage() for r in lines)
    assert "cassandra create retrying after 1 attempt(s)" in retrying and "connection refused" in retrying
    assert "cassandra create ready after 2 attempt(s)" in ready and ready.startswith("tenant ")
    caplog.clear()
    await run(FlakyProvisioner([PermanentError("bad replication")]), command())
    (failed,) = [r for r in caplog.records if r.name == "pipeline.executor"]
    assert failed.levelno == logging.WARNING and "failed after 1 attempt(s)" in failed.getMessage()
