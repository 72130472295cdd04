"""Retries of ``POST /compute/provision``: the ``Idempotency-Key`` header, the request id derived from it
(or from ``request_name``), and whether a retry carries the same body (docs/compute.md, "Retries")."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    idempotent_request_id,
    named_request_id,
    new_request_id,
    valid_idempotency_key,
)
from web.compute.models import IDEMPOTENCY_HEADER, status_url
from web.errors import ApiError


def idempotency_key_of(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key`` (``None`` without one); 400 when malformed or given twice."""
    return parse_idempotency_key(request.headers.getall(IDEMPOTENCY_HEADER, []))


def parse_idempotency_key(values: Sequence[str]) -> str | None:
    """The key of the ``Idempotency-Key`` header's values (``None``: no header); 400 when malformed or twice."""
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "invalid-idempotency-key", f"the {IDEMPOTENCY_HEADER} header is given more than once")
    key = values[0]
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not valid_idempotency_key(key):
        raise ApiError(
            400, "invalid-idempotency-key",
            f"the {IDEMPOTENCY_HEADER} header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} letters, digits, '.', '_', "
            "':' or '-', starting with a letter or digit (a UUID will do)",
            {"pattern": IDEMPOTENCY_KEY_PATTERN, "max_length": MAX_IDEMPOTENCY_KEY_LENGTH},
        )
    return key


def request_id_for(tenant_id: str, request_name: str | None, key: str | None) -> str:
    """The id of a new ``POST``: the client's name, else derived from (tenant, Idempotency-Key), else random.
    A name and a key together: the name is the id (and works as the key)."""
    if request_name is not None:
        return named_request_id(tenant_id, request_name)
    if key is not None:
        return idempotent_request_id(tenant_id, key)
    return new_request_id(tenant_id)


def same_request(existing: ComputeRecord, request: ComputeRequest) -> bool:
    """Whether ``request`` is a retry of the request ``existing`` records (the same body, as validated)."""
    stored = existing.request_hash or existing.request.fingerprint()  # records older than the stored hash
    return stored == request.fingerprint()


def key_reused(request_id: str) -> ApiError:
    return ApiError(
        422, "idempotency-key-reused",
        f"compute request {request_id} exists with a different body: an Idempotency-Key (or request_name) names one "
        "request; send the same body to retry it, or use a new key for a new request",
        {"request_id": request_id, "status_url": status_url(request_id)},
    )
