"""Compute request ids: ``<tenant_id>.<name>`` (``.`` cannot occur in a tenant id), so the tenant, and so
the worker owning the request, follows from the id alone; records are keyed ``<tenant_id>/<id>``.

Where an id comes from: a client-chosen ``request_name`` (REST body or event) is the name itself; an
``Idempotency-Key`` header (REST) is hashed with the tenant into ``k<hex>``; an event without a name is hashed
from its event id into ``e<hex>``; otherwise a random ``c<hex>``. The derived ids make a retried request land
on the same record, so the durable record in the changelog table is the idempotency record.
"""

from __future__ import annotations

import re
import secrets

from pipeline.events.models import TENANT_ID_PATTERN, ComputeRequested
from pipeline.outputs import derived_id

_NAME = r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?"
REQUEST_ID_PATTERN = rf"^(?P<tenant>{TENANT_ID_PATTERN[1:-1]})\.(?P<name>{_NAME})$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
#: A client-chosen request name (the part after ``<tenant>.``): as ``ComputeRequested.request_name``.
REQUEST_NAME_PATTERN = f"^{_NAME}$"
#: An ``Idempotency-Key``: 1 to 128 characters of a safe alphabet (a UUID, a ULID, ``job-42:attempt``), so it
#: can be logged and audited as it is; the id holds only its hash. A client's ``request_name`` may look like a
#: derived id (``k<hex>``, ``c<hex>``): only within its own tenant, and the stored body hash still tells them apart.
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_IDEMPOTENCY_KEY_LENGTH = 128
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def new_request_id(tenant_id: str) -> str:
    """A fresh request id of ``tenant_id`` (REST requests)."""
    return f"{tenant_id}.c{secrets.token_hex(10)}"


def named_request_id(tenant_id: str, request_name: str) -> str:
    """The id of a request the client named (REST ``request_name``; the event path does the same)."""
    return f"{tenant_id}.{request_name}"


def valid_idempotency_key(key: str) -> bool:
    return _IDEMPOTENCY_KEY.fullmatch(key) is not None


def idempotent_request_id(tenant_id: str, key: str) -> str:
    """The id of a request sent with ``Idempotency-Key: key`` by ``tenant_id``: deterministic, so every retry
    of it names the same record (and the same owner worker); scoped per tenant (the tenant is hashed in and is
    the id's prefix). 80 bits of the hash: a collision between two keys of one tenant is out of reach."""
    if not valid_idempotency_key(key):
        raise ValueError("invalid idempotency key")
    return f"{tenant_id}.k{derived_id('compute-idempotency-key', tenant_id, key)[:20]}"


def event_request_id(event: ComputeRequested) -> str:
    """The request id of an event: ``<tenant>.<request_name>``, else derived from the event id (so a
    redelivered event maps to the same request)."""
    name = event.request_name or f"e{derived_id('compute-request', event.event_id)[:20]}"
    return f"{event.tenant_id}.{name}"


def tenant_of(request_id: str) -> str | None:
    """The tenant of a well-formed request id, else ``None``."""
    match = _REQUEST_ID.fullmatch(request_id)
    return match.group("tenant") if match else None


def record_key(request_id: str) -> str | None:
    """Key of the request's record in the table (``<tenant>/<request id>``), ``None`` if malformed."""
    tenant = tenant_of(request_id)
    return f"{tenant}/{request_id}" if tenant is not None else None


