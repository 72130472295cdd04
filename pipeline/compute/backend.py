"""What every allocation backend (derivatives engine, in-house Kubernetes) offers, and its errors.

The failover (:mod:`pipeline.compute.allocation`) only talks to this protocol. The contract that makes
"no leaked allocations" possible:

* ``allocate`` carries a caller-chosen ``client_token`` (one per attempt). Repeating ``allocate`` with
  the same token returns the same allocation (idempotent).
* ``release_by_token`` releases whatever was allocated under that token, and *tombstones* the token:
  an ``allocate`` with that token arriving later (a request still in flight when the caller gave up) is
  refused. So a caller that times out or is cancelled mid-``allocate`` can always clean up.
* ``release`` and ``release_by_token`` are idempotent: releasing something unknown or already released
  succeeds.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr

from pipeline.compute.catalog import Offer
from pipeline.compute.request import ComputeRequest


class AllocationState(StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    FAILED = "failed"
    RELEASED = "released"


class AllocationHandle(BaseModel):
    """A backend's allocation (what ``allocate`` and ``status`` return). Holds no secrets."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    allocation_id: str
    client_token: str
    offer_id: str
    state: AllocationState
    host: str | None = None
    ssh_port: int | None = None
    message: str | None = None
    created_at: datetime | None = None


class ListedAllocation(BaseModel):
    """An allocation as a provider lists it (found by its labels, not by anything in memory)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    allocation_id: str
    client_token: str
    tenant_id: str
    created_at: datetime | None = None


class AccessSetup(BaseModel):
    """What the machine is configured with: the allocation's SSH public key and Jupyter token.

    The token is a secret: ``SecretStr`` keeps it out of ``repr``/``model_dump``; backends read it with
    ``get_secret_value()`` only to hand it to the machine.
    """

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    ssh_public_key: str
    jupyter_token: SecretStr


class BackendError(Exception):
    """Base of the typed backend errors. ``code`` is the wire error code, ``failover`` whether another
    candidate should be tried."""

    code = "error"
    failover = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AllocationRefused(BackendError):
    """The provider refused this allocation (policy, account, token tombstoned...)."""

    code = "refused"


class CapacityUnavailable(BackendError):
    """No capacity for this offer right now."""

    code = "capacity"


class AllocationTimeout(BackendError):
    """The backend did not answer in time (or said it timed out). The allocation may exist: release it
    by client token."""

    code = "timeout"


class BackendUnavailable(BackendError):
    """Connection failure or server error; the allocation may exist: release it by client token."""

    code = "unavailable"


class AllocationNotFound(BackendError):
    """Unknown allocation or offer id."""

    code = "not_found"


class InvalidRequest(BackendError):
    """The backend rejected the request as malformed (a bug on our side: do not fail over blindly)."""

    code = "invalid"
    failover = False


class ProtocolError(BackendError):
    """The backend answered something that does not follow the contract."""

    code = "protocol"


@runtime_checkable
class ComputeBackend(Protocol):
    """An allocation backend (see the module docstring for the idempotency/tombstone contract)."""

    async def allocate(
        self, offer: Offer, request: ComputeRequest, *, client_token: str, setup: AccessSetup
    ) -> AllocationHandle: ...

    async def status(self, allocation_id: str) -> AllocationHandle: ...

    async def release(self, allocation_id: str) -> None: ...

    async def release_by_token(self, client_token: str) -> None: ...


class BackendRouter:
    """Which backend allocates an offer: by provider, else the default (the derivatives engine)."""

    def __init__(self, default: ComputeBackend, by_provider: dict[str, ComputeBackend] | None = None) -> None:
        self.default = default
        self.by_provider = dict(by_provider or {})

    def for_offer(self, offer: Offer) -> ComputeBackend:
        return self.by_provider.get(offer.provider, self.default)

    def for_provider(self, provider: str) -> ComputeBackend:
        return self.by_provider.get(provider, self.default)
