"""Compute request ids: ``<tenant_id>.<name>`` (``.`` cannot occur in a tenant id), so the tenant, and so
the worker owning the request, follows from the id alone; records are keyed ``<tenant_id>/<id>``."""

from __future__ import annotations

import re
import secrets

from pipeline.events.models import TENANT_ID_PATTERN, ComputeRequested
from pipeline.outputs import derived_id

_NAME = r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?"
REQUEST_ID_PATTERN = rf"^(?P<tenant>{TENANT_ID_PATTERN[1:-1]})\.(?P<name>{_NAME})$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


def new_request_id(tenant_id: str) -> str:
    """A fresh request id of ``tenant_id`` (REST requests)."""
    return f"{tenant_id}.c{secrets.token_hex(10)}"


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


