"""Allocation with failover: try the ranked candidates in order until one is running.

* Each attempt uses its own ``client_token``: with ``request_id``, derived deterministically from the
  request id, the attempt number, the provider and the offer (:func:`allocation_token`), and announced to
  ``on_intent`` (which records it durably) BEFORE the backend is called, so a worker killed during the
  call leaves a token that recovery can release (docs/operations.md).
* On refusal, capacity error, timeout, backend failure or a machine that fails while provisioning, the
  attempt is recorded and the next candidate is tried, within ``max_attempts`` and a total ``deadline_s``.
* No leaked allocations: on every path where an attempt is abandoned after the backend may have
  allocated something (timeout, connection/server error, malformed answer, provisioning failure or
  timeout, the total deadline, cancellation of the caller), the attempt's token is released with
  ``release_by_token`` (which also tombstones the token, so a late ``allocate`` cannot resurrect it).
  Cleanup runs shielded from cancellation and is retried; a token whose release still fails is
  reported in :attr:`FailoverResult.unreleased` (and logged as an error) for the caller to retry.
* Every attempt is recorded (offer, outcome, error, duration) in the result and passed to ``on_attempt``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.compute.backend import (
    AccessSetup,
    AllocationHandle,
    AllocationState,
    AllocationTimeout,
    BackendError,
    BackendRouter,
    BackendUnavailable,
    CapacityUnavailable,
    ComputeBackend,
    ProtocolError,
)
from pipeline.compute.catalog import Offer
from pipeline.compute.optimizer import FailureHistory
from pipeline.compute.request import ComputeRequest

logger = logging.getLogger(__name__)

#: Release tasks still running after their caller was cancelled twice (kept referenced until done).
_background_releases: set[asyncio.Task[str | None]] = set()


class AttemptOutcome(StrEnum):
    RUNNING = "running"
    REFUSED = "refused"
    CAPACITY = "capacity"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    PROVISIONING_FAILED = "provisioning_failed"
    ERROR = "error"
    DEADLINE = "deadline"
    CANCELLED = "cancelled"


#: Outcomes after which something may exist at the backend and the token must be released.
_MAY_EXIST = {
    AttemptOutcome.TIMEOUT,
    AttemptOutcome.UNAVAILABLE,
    AttemptOutcome.PROVISIONING_FAILED,
    AttemptOutcome.ERROR,
    AttemptOutcome.DEADLINE,
    AttemptOutcome.CANCELLED,
}


class IntentState(StrEnum):
    """What is known of an attempt's allocation. ``allocating``: recorded before the backend call, outcome
    unknown (a crash leaves it so); ``held``: the request's allocation; ``released``: released, or nothing
    was allocated; ``unreleased``: its release failed and must be retried."""

    ALLOCATING = "allocating"
    HELD = "held"
    RELEASED = "released"
    UNRELEASED = "unreleased"


class AllocationIntent(BaseModel):
    """An attempt as recorded before its backend call: enough to release it after a crash."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    attempt: int = Field(ge=1)
    client_token: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
    provider: str = Field(min_length=1, max_length=64)
    offer_id: str = Field(min_length=1, max_length=256)
    state: IntentState = IntentState.ALLOCATING
    at: AwareDatetime


class Attempt(BaseModel):
    """One allocation attempt (stored in the record, returned by the status endpoint)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    attempt: int
    offer_id: str
    provider: str
    region: str
    instance_type: str
    capacity_class: str
    client_token: str
    allocation_id: str | None = None
    outcome: AttemptOutcome
    error: str | None = None
    started_at: AwareDatetime
    duration_s: float
    released: bool = False
    release_error: str | None = None


class FailoverPolicy(BaseModel):
    """Bounds of one failover run. ``provisioning_timeout_s`` bounds the wait for ``running`` per
    attempt (``None``: only the total deadline); release calls are bounded by ``release_timeout_s`` and
    retried ``release_retries`` times (cleanup may run past the deadline by that much)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    max_attempts: int = Field(default=5, ge=1)
    deadline_s: float = Field(default=600.0, gt=0)
    poll_interval_s: float = Field(default=2.0, gt=0)
    provisioning_timeout_s: float | None = Field(default=None, gt=0)
    release_timeout_s: float = Field(default=15.0, gt=0)
    release_retries: int = Field(default=3, ge=1)
    release_backoff_s: float = Field(default=0.5, ge=0)


class FailoverResult(BaseModel):
    """Outcome of :func:`allocate_with_failover`. ``unreleased`` must be empty; if not, those client
    tokens may still hold capacity and the caller must retry ``release_by_token``."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    ok: bool
    offer: Offer | None = None
    allocation: AllocationHandle | None = None
    attempts: list[Attempt]
    error: str | None = None
    unreleased: list[str] = Field(default_factory=list)


class _ProvisioningFailed(Exception):
    def __init__(self, handle: AllocationHandle) -> None:
        super().__init__(handle.message or f"allocation {handle.allocation_id} failed while provisioning")
        self.handle = handle


class _ProvisioningTimeout(Exception):
    pass


def _outcome_of(exc: BaseException) -> AttemptOutcome:
    if isinstance(exc, _ProvisioningFailed):
        return AttemptOutcome.PROVISIONING_FAILED
    if isinstance(exc, _ProvisioningTimeout | AllocationTimeout):
        return AttemptOutcome.TIMEOUT
    if isinstance(exc, CapacityUnavailable):
        return AttemptOutcome.CAPACITY
    if isinstance(exc, BackendUnavailable):
        return AttemptOutcome.UNAVAILABLE
    if isinstance(exc, ProtocolError):
        return AttemptOutcome.ERROR
    if isinstance(exc, BackendError):
        return AttemptOutcome.REFUSED if exc.code in ("refused", "not_found") else AttemptOutcome.ERROR
    return AttemptOutcome.ERROR


async def _wait_running(
    backend: ComputeBackend, handle: AllocationHandle, policy: FailoverPolicy
) -> AllocationHandle:
    started = time.monotonic()
    while True:
        if handle.state is AllocationState.RUNNING:
            return handle
        if handle.state in (AllocationState.FAILED, AllocationState.RELEASED):
            raise _ProvisioningFailed(handle)
        if policy.provisioning_timeout_s is not None and time.monotonic() - started >= policy.provisioning_timeout_s:
            raise _ProvisioningTimeout(
                f"{handle.allocation_id} not running after {policy.provisioning_timeout_s:g}s"
            )
        await asyncio.sleep(policy.poll_interval_s)
        handle = await backend.status(handle.allocation_id)


async def _release_token(backend: ComputeBackend, token: str, policy: FailoverPolicy) -> str | None:
    """Release by token with bounded retries; returns the last error, ``None`` when released."""
    error: str | None = None
    for attempt in range(policy.release_retries):
        try:
            async with asyncio.timeout(policy.release_timeout_s):
                await backend.release_by_token(token)
            return None
        except (BackendError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("release of token %s failed (try %d): %s", token, attempt + 1, error)
            if attempt + 1 < policy.release_retries:
                await asyncio.sleep(policy.release_backoff_s * (attempt + 1))
    return error


async def _release_shielded(backend: ComputeBackend, token: str, policy: FailoverPolicy) -> str | None:
    """:func:`_release_token` that finishes even if the caller is cancelled again meanwhile."""
    task = asyncio.ensure_future(_release_token(backend, token, policy))
    _background_releases.add(task)
    task.add_done_callback(_background_releases.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        logger.warning("cancelled again while releasing token %s; the release continues", token)
        raise


def new_client_token(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


#: Longest token: Kubernetes names the Pod ``compute-<token>`` and labels it with the token.
TOKEN_LENGTH = 40


def token_prefix(request_id: str) -> str:
    """The client-token prefix of a request's attempts: at most 16 characters of its id made DNS-1123
    safe (lower case, ``[a-z0-9-]``), so tokens can name Kubernetes objects; ``""`` if nothing is left."""
    safe = re.sub(r"[^a-z0-9-]", "-", request_id.lower())[:16].strip("-")
    return f"{safe}-" if safe else ""


def allocation_token(request_id: str, attempt: int, provider: str, offer_id: str) -> str:
    """The client token of attempt ``attempt`` of ``request_id`` on ``offer_id``: the same inputs always
    give the same token (the backend's idempotency key), different attempts different ones. At most
    :data:`TOKEN_LENGTH` characters of ``[a-z0-9-]`` (at least 23 hex digits of SHA-256)."""
    prefix = token_prefix(request_id)
    digest = hashlib.sha256(f"{request_id}:{attempt}:{provider}:{offer_id}".encode()).hexdigest()
    return prefix + digest[: TOKEN_LENGTH - len(prefix)]


class _IntentNotRecorded(Exception):
    """``on_intent`` failed: the backend must not be called for a token nobody could release later."""


def settle_intents(
    intents: Sequence[AllocationIntent], attempts: Sequence[Attempt], held_token: str | None = None
) -> list[AllocationIntent]:
    """The intents after a failover run: ``held`` for the allocation kept, ``released`` for attempts that
    were released or never allocated, ``unreleased`` for those whose release failed; intents of no finished
    attempt stay ``allocating``."""
    by_token = {a.client_token: a for a in attempts}
    settled = []
    for intent in intents:
        attempt = by_token.get(intent.client_token)
        state = intent.state
        if intent.client_token == held_token:
            state = IntentState.HELD
        elif attempt is not None:
            may_exist = attempt.outcome in _MAY_EXIST or attempt.outcome is AttemptOutcome.RUNNING
            state = IntentState.UNRELEASED if may_exist and not attempt.released else IntentState.RELEASED
        settled.append(intent if state is intent.state else intent.model_copy(update={"state": state}))
    return settled


async def allocate_with_failover(
    request: ComputeRequest,
    candidates: Sequence[Offer],
    backends: BackendRouter | ComputeBackend,
    setup: AccessSetup,
    *,
    policy: FailoverPolicy | None = None,
    history: FailureHistory | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    on_allocated: Callable[[Offer, AllocationHandle], Awaitable[None]] | None = None,
    token_prefix: str = "",
    request_id: str | None = None,
    on_intent: Callable[[AllocationIntent], Awaitable[None]] | None = None,
) -> FailoverResult:
    """Allocate the first candidate that reaches ``running``; see the module docstring.

    ``on_attempt`` is called with every finished attempt; ``on_allocated`` is awaited when the backend
    accepted an allocation (before waiting for ``running``; an exception there abandons the attempt and
    releases it). With ``request_id`` the tokens are :func:`allocation_token`; ``on_intent`` is awaited
    with each attempt's intent before its backend call (an exception there ends the run without calling
    the backend).

    Raises only ``asyncio.CancelledError`` (after releasing the in-flight attempt); everything else is
    reported in the result.
    """
    policy = policy or FailoverPolicy()
    router = backends if isinstance(backends, BackendRouter) else BackendRouter(backends)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.deadline_s
    attempts: list[Attempt] = []
    unreleased: list[str] = []
    last_error: str | None = None

    def record(attempt: Attempt) -> None:
        attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)

    for number, offer in enumerate(candidates[: policy.max_attempts], start=1):
        if loop.time() >= deadline:
            last_error = f"deadline of {policy.deadline_s:g}s reached before attempt {number}"
            break
        backend = router.for_offer(offer)
        if request_id is not None:
            token = allocation_token(request_id, number, offer.provider, offer.offer_id)
        else:
            token = new_client_token(token_prefix)
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        handle: AllocationHandle | None = None
        outcome: AttemptOutcome
        error: str | None = None
        cancelled: asyncio.CancelledError | None = None
        stop = backend_called = False
        try:
            async with asyncio.timeout_at(deadline):
                if on_intent is not None:
                    intent = AllocationIntent(attempt=number, client_token=token, provider=offer.provider,
                                              offer_id=offer.offer_id, at=started_at)
                    try:
                        await on_intent(intent)
                    except Exception as exc:
                        raise _IntentNotRecorded(f"{type(exc).__name__}: {exc}") from exc
                backend_called = True
                handle = await backend.allocate(offer, request, client_token=token, setup=setup)
                if on_allocated is not None:
                    await on_allocated(offer, handle)
                handle = await _wait_running(backend, handle, policy)
            outcome = AttemptOutcome.RUNNING
        except TimeoutError:
            outcome = AttemptOutcome.DEADLINE
            error = f"total deadline of {policy.deadline_s:g}s reached"
        except asyncio.CancelledError as exc:
            outcome, error, cancelled = AttemptOutcome.CANCELLED, "cancelled by the caller", exc
        except _IntentNotRecorded as exc:
            outcome, error, stop = AttemptOutcome.ERROR, f"intent not recorded: {exc}", True
            logger.error("attempt %d on %s not made: its intent could not be recorded: %s", number,
                         offer.offer_id, exc)
        except (BackendError, _ProvisioningFailed, _ProvisioningTimeout) as exc:
            outcome, error = _outcome_of(exc), f"{type(exc).__name__}: {exc}"
            stop = isinstance(exc, BackendError) and not exc.failover
            if isinstance(exc, _ProvisioningFailed):
                handle = exc.handle
        except Exception as exc:  # a bug in a backend must not leak its allocation
            outcome, error = AttemptOutcome.ERROR, f"{type(exc).__name__}: {exc}"
            logger.exception("unexpected error allocating %s", offer.offer_id)
        released, release_error = False, None
        if outcome in _MAY_EXIST and backend_called:
            release_error = await _release_shielded(backend, token, policy)
            released = release_error is None
            if release_error is not None:
                unreleased.append(token)
                logger.error("LEAK RISK: token %s on %s not released: %s", token, offer.offer_id, release_error)
        attempt = Attempt(
            attempt=number,
            offer_id=offer.offer_id,
            provider=offer.provider,
            region=offer.region,
            instance_type=offer.instance_type,
            capacity_class=offer.capacity_class,
            client_token=token,
            allocation_id=handle.allocation_id if handle is not None else None,
            outcome=outcome,
            error=error,
            started_at=started_at,
            duration_s=time.monotonic() - t0,
            released=released,
            release_error=release_error,
        )
        record(attempt)
        logger.info(
            "attempt %d on %s: %s%s", number, offer.offer_id, outcome.value, f" ({error})" if error else ""
        )
        if cancelled is not None:
            raise cancelled
        if outcome is AttemptOutcome.RUNNING and handle is not None:
            return FailoverResult(ok=True, offer=offer, allocation=handle, attempts=attempts, unreleased=unreleased)
        if history is not None:
            history.record_failure(offer.offer_id)
        last_error = error
        if outcome is AttemptOutcome.DEADLINE or stop:
            break
    if not candidates:
        last_error = "no candidates"
    elif len(attempts) == policy.max_attempts and not last_error:
        last_error = "max attempts reached"
    summary = f"no candidate reached running after {len(attempts)} attempt(s)"
    return FailoverResult(
        ok=False,
        attempts=attempts,
        error=f"{summary}: {last_error}" if last_error else summary,
        unreleased=unreleased,
    )
