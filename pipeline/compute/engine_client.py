"""Async client of the platform's derivatives engine (``DERIVATIVES_ENGINE_URL``).

The engine fronts partner capacity at wholesale prices. The wire contract (version ``v1``) is documented
in ``docs/compute.md``; in short (JSON bodies, errors as ``{"error": code, "message": text}``):

==========================================  ==========================================================
``GET  /v1/health``                         ``{"status": "ok"}``
``POST /v1/quotes``                         filters -> ``{"quote_id", "valid_until", "offers": [...]}``
``POST /v1/allocations``                    offer + client token -> 201/200 allocation; 409 refused,
                                            503 capacity, 504 timeout, 404 unknown offer, 400 invalid
``GET  /v1/allocations/{id}``               allocation (state provisioning/running/failed/released)
``DELETE /v1/allocations/{id}``             release (idempotent; 404 = already gone)
``POST /v1/allocations/release``            ``{"client_token"}`` -> release + tombstone the token
``GET  /v1/capacity``                       ``{"pools": [{provider, region, instance_type, ...}]}``
==========================================  ==========================================================

Every error is a typed :class:`~pipeline.compute.backend.BackendError` subclass. The client never logs
request bodies (they carry the Jupyter token).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.compute.backend import (
    AccessSetup,
    AllocationHandle,
    AllocationNotFound,
    AllocationRefused,
    AllocationTimeout,
    BackendError,
    BackendUnavailable,
    CapacityUnavailable,
    InvalidRequest,
    ProtocolError,
)
from pipeline.compute.catalog import Offer
from pipeline.compute.request import ComputeRequest
from pipeline.metrics import COMPUTE_ENGINE_CALLS

logger = logging.getLogger(__name__)

API_PREFIX = "/v1"

_ERRORS: dict[str, type[BackendError]] = {
    "refused": AllocationRefused,
    "token_released": AllocationRefused,
    "capacity": CapacityUnavailable,
    "timeout": AllocationTimeout,
    "not_found": AllocationNotFound,
    "unknown_offer": AllocationNotFound,
    "invalid": InvalidRequest,
}


class Quote(BaseModel):
    """Offers of the engine at wholesale prices (``Offer.price_per_hour``), valid until ``valid_until``."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    quote_id: str
    valid_until: datetime
    offers: list[Offer]


class CapacityPool(BaseModel):
    """The engine's view of one physical pool (provider, region, instance type) in instances."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    provider: str
    region: str
    instance_type: str
    capacity: int
    allocated: int
    available: int


def offer_to_wire(offer: Offer) -> dict[str, Any]:
    """An offer as the engine sends it (``wholesale_price_per_hour`` instead of ``price_per_hour``)."""
    body = offer.model_dump(mode="json", exclude={"price_per_hour", "source"})
    body["wholesale_price_per_hour"] = offer.price_per_hour
    return body


def offer_from_wire(body: dict[str, Any]) -> Offer:
    data = dict(body)
    data["price_per_hour"] = data.pop("wholesale_price_per_hour")
    data["source"] = "engine"
    return Offer.model_validate(data)


class DerivativesEngineClient:
    """Async client; implements :class:`~pipeline.compute.backend.ComputeBackend`.

    ``timeout_s`` bounds every call but ``allocate``, which ``allocate_timeout_s`` bounds. Pass a shared
    ``session`` to reuse connections (the client then does not close it), or use ``async with``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        allocate_timeout_s: float = 30.0,
        api_token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self.timeout_s = timeout_s
        self.allocate_timeout_s = allocate_timeout_s
        self._headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        #: Calls made by this client, by operation (the benchmarks read it; the metric counts every client's).
        self.calls: Counter[str] = Counter()

    async def __aenter__(self) -> DerivativesEngineClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def _call(
        self, method: str, path: str, *, operation: str, json: Any = None, timeout_s: float | None = None
    ) -> tuple[int, Any]:
        """One call; ``operation`` (a fixed name per method, never the path: it carries ids) labels the count."""
        self.calls[operation] += 1
        try:
            result = await self._request(method, path, json=json, timeout_s=timeout_s)
        except BackendError:
            COMPUTE_ENGINE_CALLS.labels(operation, "error").inc()
            raise
        COMPUTE_ENGINE_CALLS.labels(operation, "ok").inc()
        return result

    async def _request(
        self, method: str, path: str, *, json: Any = None, timeout_s: float | None = None
    ) -> tuple[int, Any]:
        url = f"{self.base_url}{API_PREFIX}{path}"
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            async with self._client().request(
                method, url, json=json, timeout=timeout, headers=self._headers
            ) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except TimeoutError as exc:
            raise AllocationTimeout(f"{method} {path}: no answer within {timeout.total}s") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise self._error(method, path, status, body)
        return status, body

    @staticmethod
    def _error(method: str, path: str, status: int, body: Any) -> BackendError:
        code = body.get("error") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        text = f"{method} {path}: HTTP {status} {code or ''} {message or ''}".strip()
        cls = _ERRORS.get(code or "")
        if cls is None:
            if status == 404:
                cls = AllocationNotFound
            elif status == 409:
                cls = AllocationRefused
            elif status == 503:
                cls = CapacityUnavailable
            elif status == 504:
                cls = AllocationTimeout
            elif status >= 500:
                cls = BackendUnavailable
            elif status == 400 or status == 422:
                cls = InvalidRequest
            else:
                cls = ProtocolError
        return cls(text, status=status)

    @staticmethod
    def _handle(body: Any) -> AllocationHandle:
        try:
            return AllocationHandle.model_validate(body)
        except ValidationError as exc:
            raise ProtocolError(f"malformed allocation: {exc.error_count()} error(s)") from exc

    async def health(self) -> bool:
        _, body = await self._call("GET", "/health", operation="health")
        return isinstance(body, dict) and body.get("status") == "ok"

    async def quote(
        self,
        *,
        tenant_id: str | None = None,
        gpu_name: str | None = None,
        providers: list[str] | None = None,
        regions: list[str] | None = None,
    ) -> Quote:
        """Offers at wholesale prices, optionally filtered (filters are hints: the optimizer re-checks)."""
        filters = {"tenant_id": tenant_id, "gpu_name": gpu_name, "providers": providers, "regions": regions}
        _, body = await self._call("POST", "/quotes", operation="quote", json=filters)
        try:
            return Quote(
                quote_id=body["quote_id"],
                valid_until=body["valid_until"],
                offers=[offer_from_wire(o) for o in body["offers"]],
            )
        except (KeyError, TypeError, ValidationError) as exc:
            raise ProtocolError(f"malformed quote: {exc}") from exc

    async def allocate(
        self, offer: Offer, request: ComputeRequest, *, client_token: str, setup: AccessSetup
    ) -> AllocationHandle:
        body = {
            "offer_id": offer.offer_id,
            "client_token": client_token,
            "tenant_id": request.tenant_id,
            "duration_hours": request.duration_hours,
            "resources": request.resources.model_dump(mode="json"),
            "ssh_public_key": setup.ssh_public_key,
            "jupyter_token": setup.jupyter_token.get_secret_value(),
        }
        _, answer = await self._call(
            "POST", "/allocations", operation="allocate", json=body, timeout_s=self.allocate_timeout_s
        )
        handle = self._handle(answer)
        logger.info("engine allocated %s on %s (token %s)", handle.allocation_id, offer.offer_id, client_token)
        return handle

    async def status(self, allocation_id: str) -> AllocationHandle:
        _, body = await self._call("GET", f"/allocations/{allocation_id}", operation="status")
        return self._handle(body)

    async def release(self, allocation_id: str) -> None:
        try:
            await self._call("DELETE", f"/allocations/{allocation_id}", operation="release")
        except AllocationNotFound:
            logger.debug("release %s: already gone", allocation_id)

    async def release_by_token(self, client_token: str) -> None:
        _, body = await self._call(
            "POST", "/allocations/release", operation="release_by_token", json={"client_token": client_token}
        )
        released = body.get("released", []) if isinstance(body, dict) else []
        if released:
            logger.info("engine released %s by token %s", released, client_token)

    async def capacity(self) -> list[CapacityPool]:
        _, body = await self._call("GET", "/capacity", operation="capacity")
        try:
            return [CapacityPool.model_validate(p) for p in body["pools"]]
        except (KeyError, TypeError, ValidationError) as exc:
            raise ProtocolError(f"malformed capacity: {exc}") from exc
