"""Executing provisioning commands against the backends: retries with backoff, one result per transition.

``execute`` runs one command to its end (ready, failed, deleted; skipped when its backend is switched off by
configuration) and reports every transition through ``report``; the agents turn reports into status-table
writes and ``provisioning-events``. Commands of different resources run concurrently, so one backend failing
does not hold up the others.

A backend that cannot be reached at all (:class:`~pipeline.provisioners.errors.BackendUnavailable`: still
being built or started, or down) makes the command ``waiting``: it tries again with the same capped backoff
without spending its attempts, for up to ``RetryPolicy.backend_wait`` seconds
(``PROVISIONING_BACKEND_WAIT_SECONDS``), then fails saying so.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pipeline.contract.records import ProvisioningResult
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.metrics import COMMANDS_FENCED, PROVISIONING_ATTEMPTS, PROVISIONING_VERIFIED
from pipeline.provisioners.base import Provisioner, TenantSpec, UserAccess, UserGrant, effective_role
from pipeline.provisioners.disabled import DisabledProvisioner
from pipeline.provisioners.errors import BackendUnavailable, PermanentError, ProvisioningError
from pipeline.provisioners.tiers import Quota, QuotaOverride

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: How long a command waits for an unreachable backend (tries not counted as attempts) before it fails.
    backend_wait: float = 1800.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1``."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@runtime_checkable
class QuotaUpdater(Protocol):
    async def update_quota(self, tenant: TenantSpec, quota: Quota) -> Any: ...


@runtime_checkable
class WorkloadIsolation(Protocol):
    """A backend that isolates a quarantined workload (Kubernetes: a deny-all NetworkPolicy and a pod label)."""

    async def quarantine_workload(self, tenant: TenantSpec, workload: str) -> dict[str, Any]: ...

    async def release_workload(self, tenant: TenantSpec, workload: str) -> dict[str, Any]: ...


#: Actions about one user of the tenant (``spec.user``).
USER_ACTIONS = (CommandAction.CREATE_USER, CommandAction.DELETE_USER)
#: Actions about one workload of the tenant (``spec.workload``).
WORKLOAD_ACTIONS = (CommandAction.QUARANTINE, CommandAction.RELEASE_QUARANTINE)

Report = Callable[[ProvisioningResult], Awaitable[None]]
#: Why a command must stop before its next backend call, or None (``pipeline.tenants.logic.command_fence``).
Fence = Callable[[ProvisioningCommand], str | None]


def fenced(command: ProvisioningCommand, reason: str) -> None:
    COMMANDS_FENCED.labels(command.resource, command.action.value).inc()
    logger.info("dropped %s %s command %s of tenant %s (generation %d): %s", command.resource,
                command.action.value, command.command_id, command.tenant_id, command.generation, reason)


def tenant_spec(command: ProvisioningCommand) -> TenantSpec:
    spec = command.spec
    return TenantSpec(
        tenant_id=command.tenant_id,
        name=str(spec.get("name") or command.tenant_id),
        tier=str(spec["tier"]),
        region=str(spec.get("region") or "local"),
        owner_user_id=str(spec.get("owner_user_id") or f"{command.tenant_id}-admin"),
        quota=QuotaOverride.model_validate(spec["quota"]) if spec.get("quota") else None,
    )


def user_grant(command: ProvisioningCommand) -> UserGrant:
    """The user a ``create_user``/``delete_user`` command is about (``spec.user``); ValueError if unsafe."""
    user = command.spec.get("user")
    if not isinstance(user, dict):
        raise ValueError("the command has no user")
    roles = user.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ValueError("the user's roles are not a list of strings")
    email = user.get("email")
    return UserGrant(user_id=user.get("user_id"), role=effective_role(roles),
                     email=email if isinstance(email, str) else None)


def workload_of(command: ProvisioningCommand) -> str:
    """The workload a ``quarantine``/``release_quarantine`` command is about (``spec.workload``); ValueError if
    it is missing or oversized (the provisioner checks that it is a valid name)."""
    workload = command.spec.get("workload")
    if not isinstance(workload, str) or not 0 < len(workload) <= 256:
        raise ValueError("the command names no workload")
    return workload


def _user_access(command: ProvisioningCommand, provisioner: Provisioner) -> UserAccess:
    if not isinstance(provisioner, UserAccess):
        raise PermanentError(f"{command.resource} holds no per-user access")
    return provisioner


async def _perform(command: ProvisioningCommand, provisioner: Provisioner, spec: TenantSpec) -> dict[str, Any]:
    if command.action is CommandAction.CREATE:
        plan = await provisioner.apply(spec)
        return {"names": plan.names}
    if command.action is CommandAction.DELETE:
        deleted = await provisioner.delete(spec, purge=bool(command.spec.get("purge")))
        return deleted.model_dump(exclude={"resource", "tenant_id"})
    if command.action is CommandAction.UPDATE_QUOTA:
        if not isinstance(provisioner, QuotaUpdater):
            raise PermanentError(f"{command.resource} has no quota to update")
        await provisioner.update_quota(spec, Quota.model_validate(command.spec["quota"]))
        return {"quota": command.spec["quota"]}
    if command.action in WORKLOAD_ACTIONS:
        if not isinstance(provisioner, WorkloadIsolation):
            raise PermanentError(f"{command.resource} cannot isolate a workload")
        workload = workload_of(command)
        if command.action is CommandAction.QUARANTINE:
            return await provisioner.quarantine_workload(spec, workload)
        return await provisioner.release_workload(spec, workload)
    user = user_grant(command)
    if command.action is CommandAction.CREATE_USER:
        granted = await _user_access(command, provisioner).grant_user(spec, user)
        return {"user": user.user_id, "role": user.role.value, "granted": granted}
    revoked = await _user_access(command, provisioner).revoke_user(spec, user)
    return {"user": user.user_id, "revoked": revoked}


#: The transitions a person following a tenant's provisioning wants in the log (one line each).
_LOGGED: dict[str, int] = {"ready": logging.INFO, "deleted": logging.INFO, "retrying": logging.INFO,
                           "waiting": logging.INFO, "failed": logging.WARNING}
#: The detail key of a ``failed`` result that gave up waiting for an unreachable backend.
GAVE_UP_WAITING = "backend_unavailable"


def logged_steps(command: ProvisioningCommand, report: Report) -> Report:
    """``report``, also writing one log line per step that ends, retries or starts waiting for its backend (with
    its time since the start), and one when a backend waited for answers again."""
    started = time.monotonic()
    waiting_since: float | None = None

    async def report_and_log(result: ProvisioningResult) -> None:
        nonlocal waiting_since
        if result.status == "waiting":
            waiting_since = time.monotonic()
        elif waiting_since is not None:
            if not result.detail.get(GAVE_UP_WAITING):
                logger.info("tenant %s: backend %s joined after %.2f s of waiting for it", command.tenant_id,
                            command.resource, time.monotonic() - waiting_since)
            waiting_since = None
        level = _LOGGED.get(result.status)
        if level is not None:
            error = f": {result.error[:300]}" if result.error else ""
            who = f" of user {result.user_id}" if result.user_id else ""
            logger.log(level, "tenant %s: %s %s%s %s after %d attempt(s), %.2f s%s", command.tenant_id,
                       command.resource, command.action.value, who, result.status, result.attempts,
                       time.monotonic() - started, error)
        await report(result)

    return report_and_log


async def execute(
    command: ProvisioningCommand,
    provisioners: Mapping[str, Provisioner],
    report: Report,
    policy: RetryPolicy = RetryPolicy(),
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    fence: Fence | None = None,
    verify_first: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> ProvisioningResult:
    """Run ``command`` until it succeeds, fails permanently, runs out of attempts or out of time waiting for its
    backend.

    ``fence`` is asked before every backend call (the first attempt and each try after a backoff, waiting ones
    included): a command it stops reports nothing more and returns ``fenced``. With ``verify_first`` a create
    first verifies, and a resource that exists as planned is ``ready`` without an apply (a replayed create).
    A :class:`BackendUnavailable` reports ``waiting`` (once per spell of waiting) and is tried again after a
    backoff without counting as an attempt, until ``policy.backend_wait`` seconds (``clock``) have passed.
    """
    rng = rng or random.Random()
    report = logged_steps(command, report)
    raw_user = command.spec.get("user") if command.action in USER_ACTIONS else None
    user_id = str(raw_user.get("user_id"))[:128] if isinstance(raw_user, dict) else None

    def result(status: str, attempts: int, error: str | None = None, **detail: Any) -> ProvisioningResult:
        return ProvisioningResult(
            command_id=command.command_id,
            tenant_id=command.tenant_id,
            resource=command.resource,
            action=command.action,
            status=status,  # type: ignore[arg-type]
            attempts=attempts,
            error=error,
            detail=detail,
            at=datetime.now(UTC),
            user_id=user_id,
        )

    provisioner = provisioners.get(command.resource)
    if provisioner is None:
        final = result("failed", 0, f"no provisioner for resource {command.resource!r}")
        await report(final)
        return final
    try:
        spec = tenant_spec(command)
        spec.names()
        user = user_grant(command) if command.action in USER_ACTIONS else None
        if command.action in WORKLOAD_ACTIONS:
            workload_of(command)
    except (ProvisioningError, ValueError) as exc:
        final = result("failed", 0, f"refused: {exc}")
        await report(final)
        return final
    reason = fence(command) if fence else None
    if reason is not None:
        fenced(command, reason)
        return result("fenced", 0, reason)
    if isinstance(provisioner, DisabledProvisioner):
        # Switched off by configuration: nothing to retry, and nothing failed.
        final = result("skipped", 0, None, reason=provisioner.reason)
        await report(final)
        return final
    await report(result("provisioning", 0))
    if verify_first and command.action in (CommandAction.CREATE, CommandAction.CREATE_USER):
        try:
            if user is not None and isinstance(provisioner, UserAccess):
                verified_ok = (await provisioner.verify_user(spec, user)).ok
            else:
                verified_ok = (await provisioner.verify(spec)).ok
        except ProvisioningError as exc:
            logger.info("verify before apply of %s for %s failed, applying: %s", command.resource,
                        command.tenant_id, exc)
        else:
            if verified_ok:
                PROVISIONING_VERIFIED.labels(command.resource).inc()
                final = result("ready", 0, None, verified=True)
                await report(final)
                return final
    last_error = ""
    attempt = 0  # attempts spent: tries that reached the backend
    tries = 0
    waiting_since: float | None = None  # when the current spell of waiting for an unreachable backend began
    waits = 0  # backoffs of the current spell
    while attempt < policy.max_attempts:
        reason = fence(command) if fence and tries > 0 else None
        if reason is not None:
            fenced(command, reason)
            return result("fenced", attempt, reason)
        tries += 1
        try:
            detail = await _perform(command, provisioner, spec)
        except BackendUnavailable as exc:
            where = f"backend {command.resource} at {exc.address or 'its configured address'}"
            cause = str(exc.args[0]) if exc.args else str(exc)
            now = clock()
            if waiting_since is None:
                waiting_since, waits = now, 0
                await report(result("waiting", attempt, f"waiting for {where} ({cause})"))
            waited = now - waiting_since
            if waited >= policy.backend_wait:
                final = result("failed", attempt, f"gave up waiting for {where} after {waited:.0f} s "
                               f"(PROVISIONING_BACKEND_WAIT_SECONDS={policy.backend_wait:g}): {cause}",
                               **{GAVE_UP_WAITING: True})
                await report(final)
                return final
            waits += 1
            await sleep(min(policy.delay(waits, rng), policy.backend_wait - waited))
            continue
        except ProvisioningError as exc:
            waiting_since = None
            attempt += 1
            last_error = str(exc)
            PROVISIONING_ATTEMPTS.labels(command.resource, "error").inc()
            if not exc.retryable:
                final = result("failed", attempt, last_error)
                await report(final)
                return final
            if attempt < policy.max_attempts:
                await report(result("retrying", attempt, last_error))
                await sleep(policy.delay(attempt, rng))
            continue
        attempt += 1
        PROVISIONING_ATTEMPTS.labels(command.resource, "ok").inc()
        done = "deleted" if command.action in (CommandAction.DELETE, CommandAction.DELETE_USER) else "ready"
        final = result(done, attempt, None, **detail)
        await report(final)
        return final
    final = result("failed", policy.max_attempts, f"gave up after {policy.max_attempts} attempts: {last_error}")
    await report(final)
    return final


def dry_run_plan(
    tenant_id: str,
    spec: dict[str, Any],
    provisioners: Mapping[str, Provisioner],
) -> dict[str, Any]:
    """Per backend, exactly what provisioning ``spec`` would create, with which settings (nothing is done)."""
    command = ProvisioningCommand(
        command_id="dry-run",
        tenant_id=tenant_id,
        resource="-",
        action=CommandAction.CREATE,
        issued_at=datetime.now(UTC),
        cause_event_id="dry-run",
        spec=spec,
    )
    tenant = tenant_spec(command)
    return {name: provisioner.plan(tenant).model_dump(mode="json") for name, provisioner in provisioners.items()}
