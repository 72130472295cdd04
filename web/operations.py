"""One route of the API as a record: what the API middleware (``web/api.py``) and the OpenAPI document
(``web/openapi.py``) both need to know about it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from web.auth import Access


@dataclass(frozen=True)
class Operation:
    """One route of the API, with everything the middleware and the OpenAPI document need to know."""

    method: str
    path: str
    name: str
    summary: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    access: Access
    responses: Mapping[int, tuple[type[BaseModel] | None, str]]
    errors: tuple[int, ...] = ()
    action: str | None = None  # audit action of a mutating operation
    tenant_in_path: bool = False
    tenant_in_body: bool = False
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    example: dict[str, Any] | None = None
    description: str = ""
    #: OpenAPI parameter objects of the request headers the operation reads (``in: header``).
    headers: tuple[dict[str, Any], ...] = ()
