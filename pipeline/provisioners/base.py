"""The one interface every backend provisioner implements, and the value types it speaks.

* :meth:`Provisioner.plan` is pure: exactly what would be created, with which settings (dry runs).
* :meth:`Provisioner.apply` creates what is missing and converges what differs; applying twice gives the
  same end state and no error.
* :meth:`Provisioner.verify` compares the backend's state with the plan (drift detection).
* :meth:`Provisioner.delete` removes what ``apply`` created; a data-bearing resource (keyspace, bucket,
  index) is kept unless ``purge``.

Backends that hold per-user access also implement :class:`UserAccess` (grant, revoke, verify one user's
access to the tenant's resource, by the user's :class:`UserRole`).

Every method raises :class:`~pipeline.provisioners.errors.TransientError` (retry) or
:class:`~pipeline.provisioners.errors.PermanentError` (do not), never a backend's own exception type.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from pipeline.provisioners.errors import BackendUnavailable, PermanentError, ProvisioningError, TransientError
from pipeline.provisioners.naming import TenantNames, names_for, validate_owner_user_id, validate_region
from pipeline.provisioners.tiers import Quota, QuotaOverride, TierConfig, TiersConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Every resource kind, in provisioning order (teardown runs in reverse).
RESOURCES: tuple[str, ...] = (
    "cassandra",
    "s3",
    "pulsar",
    "openproject",
    "ignite",
    "elasticsearch",
    "kubernetes",
)


class TenantSpec(BaseModel):
    """What a tenant asks for. Field values are checked by :meth:`names` (called by every ``plan``)."""

    # Unknown keys are ignored, so a provisioning command's ``spec`` can be passed as it is.
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    tenant_id: str = Field(max_length=1024)
    name: str = Field(min_length=1, max_length=255, description="display name (OpenProject project name)")
    tier: str = Field(max_length=64)
    region: str = Field(default="local", max_length=64)
    owner_user_id: str | None = Field(
        default=None,
        max_length=1024,
        description="the tenant admin (Kubernetes RoleBinding subject); without one, no RoleBinding",
    )
    quota: QuotaOverride | None = Field(
        default=None,
        description="per-tenant quota; the quota table's numbers, so reconciliation keeps them",
    )

    @field_validator("region", mode="before")
    @classmethod
    def _default_region(cls, value: object) -> object:
        return "local" if value is None else value

    def names(self) -> TenantNames:
        """Validate the id, owner and region; every backend name. Raises ``UnsafeNameError``."""
        names = names_for(self.tenant_id)
        if self.owner_user_id is not None:
            validate_owner_user_id(self.owner_user_id)
        validate_region(self.region)
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in self.name):
            raise PermanentError("tenant display name must not contain control characters")
        return names

    def effective_quota(self, tier: TierConfig) -> Quota:
        return self.quota.apply_to(tier.quota) if self.quota else tier.quota


class ResourcePlan(BaseModel):
    """What a provisioner creates for a tenant: names and settings, JSON-serialisable (``model_dump()``)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    resource: str
    tenant_id: str
    tier: str
    data_bearing: bool
    names: dict[str, str]
    settings: dict[str, Any]


class Difference(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    path: str
    expected: Any
    actual: Any


class VerifyResult(BaseModel):
    """How the backend's state compares with the plan."""

    resource: str
    tenant_id: str
    exists: bool
    #: Objects that should exist and do not, e.g. ``"networkpolicy default-deny"``.
    missing: list[str] = Field(default_factory=list)
    differences: list[Difference] = Field(default_factory=list)
    #: Settings this server cannot report or store (not counted as drift), e.g. bucket tagging.
    unsupported: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.exists and not self.missing and not self.differences

    @computed_field  # type: ignore[prop-decorator]
    @property
    def drifted(self) -> bool:
        return not self.ok

    @property
    def details(self) -> list[str]:
        lines = [] if self.exists else ["resource does not exist"]
        lines += [f"missing: {item}" for item in self.missing]
        lines += [f"{d.path}: expected {d.expected!r}, found {d.actual!r}" for d in self.differences]
        lines += [f"not supported by this server: {item}" for item in self.unsupported]
        return lines


class DeleteResult(BaseModel):
    resource: str
    tenant_id: str
    deleted: list[str] = Field(default_factory=list)
    #: Data-bearing objects left in place because ``purge`` was false.
    kept: list[str] = Field(default_factory=list)
    #: Objects that were already gone.
    absent: list[str] = Field(default_factory=list)


class UserRole(StrEnum):
    """The access levels a user can have on a tenant's resources, lowest first."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


_ROLE_RANK = {UserRole.VIEWER: 0, UserRole.EDITOR: 1, UserRole.ADMIN: 2}


def effective_role(roles: Iterable[str]) -> UserRole:
    """The highest of ``roles`` that is a :class:`UserRole` (case-insensitive); ``viewer`` when none is.

    A user-created event's roles are free strings (the platform's own role names may be there too); only
    these three grant anything on the backends, and a user of a tenant is at least able to look.
    """
    names = {role.value for role in UserRole}
    known = [UserRole(r.strip().lower()) for r in roles if r.strip().lower() in names]
    return max(known, key=_ROLE_RANK.__getitem__, default=UserRole.VIEWER)


class UserGrant(BaseModel):
    """One user's access to one tenant: the id is checked like the owner id (it becomes a RoleBinding subject
    and a Pulsar role, so only a safe alphabet of 1-128 characters)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    user_id: str = Field(min_length=1, max_length=128)
    role: UserRole
    #: Needed by backends that create the user's account (OpenProject); checked by the user-created event.
    email: str | None = Field(default=None, max_length=254)

    @field_validator("user_id")
    @classmethod
    def _safe_user_id(cls, value: str) -> str:
        try:
            return validate_owner_user_id(value)
        except PermanentError as exc:
            raise ValueError(str(exc)) from None


class UserAccessResult(BaseModel):
    """How a user's access on the backend compares with the grant."""

    resource: str
    tenant_id: str
    user_id: str
    missing: list[str] = Field(default_factory=list)
    differences: list[Difference] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.missing and not self.differences


@runtime_checkable
class UserAccess(Protocol):
    """A backend that grants a tenant's users access to the tenant's resource, one user at a time.

    All three are idempotent: granting twice gives the same end state, revoking a grant that is not there
    succeeds. Granting while the tenant's resource does not exist yet is a transient error (its create
    command may still be running); revoking then is a success (nothing to revoke).
    """

    async def grant_user(self, tenant: TenantSpec, user: UserGrant) -> dict[str, Any]:
        """Give ``user`` its role's access; returns what was granted (for the command's result)."""
        ...

    async def revoke_user(self, tenant: TenantSpec, user: UserGrant) -> bool:
        """Remove ``user``'s access; True if something was removed, False if nothing was there."""
        ...

    async def verify_user(self, tenant: TenantSpec, user: UserGrant) -> UserAccessResult:
        """Does the backend hold exactly ``user``'s grant?"""
        ...


@runtime_checkable
class Provisioner(Protocol):
    """One backend. ``resource`` is one of :data:`RESOURCES`."""

    resource: str
    data_bearing: bool

    def plan(self, tenant: TenantSpec) -> ResourcePlan:
        """Pure: exactly what would be created, with which settings."""
        ...

    async def apply(self, tenant: TenantSpec) -> ResourcePlan:
        """Create what is missing, converge what differs; idempotent. Returns what was applied."""
        ...

    async def verify(self, tenant: TenantSpec) -> VerifyResult:
        """Does the resource exist and match the plan?"""
        ...

    async def delete(self, tenant: TenantSpec, purge: bool = False) -> DeleteResult:
        """Remove what ``apply`` created; data-bearing resources are kept unless ``purge``."""
        ...

    async def aclose(self) -> None:
        """Release connections and sessions."""
        ...


def diff(expected: Mapping[str, Any], actual: Mapping[str, Any] | None, prefix: str = "") -> list[Difference]:
    """Differences on the keys of ``expected`` (recursively for nested mappings); extra keys are ignored."""
    actual = actual or {}
    found: list[Difference] = []
    for key, want in expected.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        have = actual.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            found += diff(want, have, path)
        elif want != have:
            found.append(Difference(path=path, expected=want, actual=have))
    return found


def http_error(resource: str, status: int, what: str, body: str = "") -> ProvisioningError:
    """The error for an unexpected HTTP status: 5xx, 408, 409, 429 are transient, other 4xx permanent."""
    message = f"{what}: HTTP {status} {body[:300]}".rstrip()
    if status >= 500 or status in {408, 409, 425, 429}:
        return TransientError(message, resource=resource)
    return PermanentError(message, resource=resource)


def is_transient_exception(exc: BaseException) -> bool:
    """Network-level failures that every backend shares."""
    return isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError, aiohttp.ClientConnectionError,
                            aiohttp.ServerTimeoutError, EOFError))


#: OS errors of a connection that could not be opened at all (nothing listens, no route to the host).
_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL})
#: Client errors that say the connection could not be opened, whatever their cause (imported by name, so a
#: client library missing one of them does not break the others).
_UNREACHABLE_NAMES = frozenset({
    "ClientConnectorDNSError",  # aiohttp: the host name does not resolve
    "ConnectionTimeoutError",  # aiohttp >= 3.10: connecting timed out (not a slow answer)
    "NewConnectionError",  # urllib3 (minio, kubernetes): connect failed; NameResolutionError is one
    "ConnectTimeoutError",  # urllib3: connecting timed out
})


def _linked(exc: BaseException) -> list[BaseException]:
    """The exceptions ``exc`` wraps: its cause (not its context: an error raised while handling a refusal is
    about something else), and the client libraries' own wrapped errors."""
    found: list[BaseException] = [exc.__cause__] if exc.__cause__ is not None else []
    for attribute in ("os_error", "reason"):  # aiohttp ClientConnectorError, urllib3 MaxRetryError
        inner = getattr(exc, attribute, None)
        if isinstance(inner, BaseException):
            found.append(inner)
    errors = getattr(exc, "errors", None)  # elastic_transport ConnectionError (a tuple), NoHostAvailable (a dict)
    if isinstance(errors, dict):
        errors = list(errors.values())
    if isinstance(errors, (list, tuple)):
        found += [e for e in errors if isinstance(e, BaseException)]
    return found


def _unreachable_here(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return True
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return True
    if isinstance(exc, aiohttp.ClientSSLError):  # the server answered the handshake: it is reachable
        return False
    return any(cls.__name__ in _UNREACHABLE_NAMES for cls in type(exc).__mro__)


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the backend could not be reached at all: connection refused, a
    name that does not resolve, no route, a connect timeout. A reachable server's errors (5xx, 429, a slow
    answer, a dropped connection) are not. Cassandra's ``NoHostAvailable`` is unreachable only when every host's
    error is."""
    seen: set[int] = set()

    def walk(error: BaseException, depth: int) -> bool:
        if id(error) in seen or depth > 8:
            return False
        seen.add(id(error))
        if _unreachable_here(error):
            return True
        if type(error).__name__ == "NoHostAvailable":
            errors = getattr(error, "errors", None)
            hosts = list(errors.values()) if isinstance(errors, dict) else []
            return bool(hosts) and all(isinstance(e, BaseException) and walk(e, depth + 1) for e in hosts)
        return any(walk(inner, depth + 1) for inner in _linked(error))

    return walk(exc, 0)


class BaseProvisioner(ABC):
    """Shared plumbing: tier lookup, error mapping, timing logs, blocking calls in a worker thread."""

    resource: str
    data_bearing: bool = False
    #: The backend client's own exceptions that are worth a retry, besides :func:`is_transient_exception`.
    transient_exceptions: tuple[type[BaseException], ...] = ()
    #: Where the backend is looked for (a URL or host:port), shown while a command waits for it.
    address: str = ""

    def __init__(self, tiers: TiersConfig) -> None:
        self.tiers = tiers

    # -- the interface ---------------------------------------------------------------------------------

    def plan(self, tenant: TenantSpec) -> ResourcePlan:
        names = tenant.names()
        tier = self.tiers.tier(tenant.tier)
        names_out, settings = self._plan(tenant, names, tier)
        return ResourcePlan(
            resource=self.resource,
            tenant_id=names.tenant_id,
            tier=tier.name,
            data_bearing=self.data_bearing,
            names=names_out,
            settings=settings,
        )

    async def apply(self, tenant: TenantSpec) -> ResourcePlan:
        plan = self.plan(tenant)
        return await self._run("apply", tenant, lambda: self._apply(tenant, plan))

    async def verify(self, tenant: TenantSpec) -> VerifyResult:
        plan = self.plan(tenant)
        return await self._run("verify", tenant, lambda: self._verify(tenant, plan))

    async def delete(self, tenant: TenantSpec, purge: bool = False) -> DeleteResult:
        plan = self.plan(tenant)
        return await self._run("delete", tenant, lambda: self._delete(tenant, plan, purge))

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""

    # -- what each backend provides ----------------------------------------------------------------------

    @abstractmethod
    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        """The names and settings of this backend's resource."""

    @abstractmethod
    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan: ...

    @abstractmethod
    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult: ...

    @abstractmethod
    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult: ...

    def _classify(self, exc: Exception) -> ProvisioningError:
        """Map a backend exception to a transient or permanent error; backends extend this."""
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, self.transient_exceptions) or is_transient_exception(exc):
            return TransientError(message, resource=self.resource)
        return PermanentError(message, resource=self.resource)

    async def _on_failure(self, error: ProvisioningError) -> None:  # noqa: B027 - optional hook
        """Called when an operation failed; backends drop a broken connection here."""

    def _unavailable(self, exc: BaseException) -> BackendUnavailable | None:
        """``exc`` as a :class:`BackendUnavailable` if it says the backend cannot be reached, else None."""
        if isinstance(exc, BackendUnavailable) or not is_unreachable(exc):
            return None
        if isinstance(exc, ProvisioningError) and not exc.retryable:
            return None  # a provisioner's own permanent verdict stands
        if isinstance(exc, ProvisioningError) and exc.args:
            message = str(exc.args[0])  # without the "<resource>: " prefix its __str__ adds
        else:
            message = f"{type(exc).__name__}: {exc}"
        return BackendUnavailable(message, resource=self.resource, address=self.address or None)

    # -- helpers -------------------------------------------------------------------------------------------

    async def _run(self, op: str, tenant: TenantSpec, call: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        try:
            result = await call()
        except ProvisioningError as exc:
            if exc.resource is None:
                exc.resource = self.resource
            # A transient error a backend mapped itself (e.g. a client's connection error) whose cause says
            # the backend cannot be reached at all.
            unavailable = self._unavailable(exc)
            if isinstance(exc, BackendUnavailable) and exc.address is None:
                exc.address = self.address or None
            await self._failed(op, tenant, unavailable or exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        except Exception as exc:
            error = self._unavailable(exc) or self._classify(exc)
            await self._failed(op, tenant, error)
            raise error from exc
        # One INFO line per step that changes something; verifies (before every apply, on every reconcile
        # pass) only at DEBUG.
        logger.log(logging.DEBUG if op == "verify" else logging.INFO, "%s %s of tenant %s took %.3fs",
                   self.resource, op, tenant.tenant_id, time.monotonic() - started)
        return result

    async def _failed(self, op: str, tenant: TenantSpec, error: ProvisioningError) -> None:
        await self._on_failure(error)
        # An unreachable backend is logged by the executor when a command starts and stops waiting for it,
        # not on every try.
        level = logging.DEBUG if isinstance(error, BackendUnavailable) else logging.WARNING
        logger.log(level, "%s %s of tenant %s failed: %s", self.resource, op, tenant.tenant_id, error)

    def _verify_result(self, plan: ResourcePlan, **fields: Any) -> VerifyResult:
        return VerifyResult(resource=self.resource, tenant_id=plan.tenant_id, **fields)

    def _delete_result(self, plan: ResourcePlan, **fields: Any) -> DeleteResult:
        return DeleteResult(resource=self.resource, tenant_id=plan.tenant_id, **fields)


async def blocking(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking client call in a worker thread."""
    return await asyncio.to_thread(func, *args, **kwargs)


class ReconnectingProvisioner(BaseProvisioner):
    """A provisioner holding one blocking client connection: dropped on close and after a transient failure,
    so that the next call connects again."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close the client connection, if there is one, and forget it."""

    async def aclose(self) -> None:
        await blocking(self._disconnect)

    async def _on_failure(self, error: ProvisioningError) -> None:
        if error.retryable:
            await blocking(self._disconnect)
