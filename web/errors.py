"""One error format for every error the web layer answers: ``{"error": {"code", "message", "details"}}``.

Handlers raise :class:`ApiError`; aiohttp's own exceptions (404 for an unknown path, 405, 413...) and
unexpected exceptions are turned into the same shape by :func:`error_middleware`. A 500 never carries the
exception's text: it carries an ``error_id`` that the log line of the exception also carries.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Error code of each HTTP status that aiohttp raises by itself.
_CODES: dict[int, str] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    411: "length-required",
    413: "payload-too-large",
    414: "uri-too-long",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    431: "headers-too-large",
    500: "internal-error",
    501: "not-implemented",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered with the common error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.json_response(error_body(code, message, details), status=status, headers=dict(headers or {}))


def from_http_exception(exc: web.HTTPException) -> ApiError:
    """The common error for one of aiohttp's HTTP exceptions (status >= 400)."""
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        details["allowed_methods"] = allowed
        headers["Allow"] = ", ".join(allowed)
    for name in ("WWW-Authenticate", "Retry-After"):
        if name in exc.headers:
            headers[name] = exc.headers[name]
    message = exc.reason or "error"
    if exc.status == 404:
        message = "no such resource"
    elif exc.status == 413:
        message = "the request body is too large"
    return ApiError(exc.status, _CODES.get(exc.status, f"http-{exc.status}"), message, details, headers)


def internal_error(exc: BaseException, request: web.Request) -> ApiError:
    """Log ``exc`` with a fresh error id; the 500 error shows only that id."""
    error_id = uuid.uuid4().hex
    logger.error(
        "unexpected error %s handling %s %s", error_id, request.method, route_pattern(request), exc_info=exc
    )
    return ApiError(500, "internal-error", "an unexpected error occurred; it has been logged", {"error_id": error_id})


def route_pattern(request: web.Request) -> str:
    """The matched route's pattern (``/api/v1/tenants/{tenant_id}``), never the raw path."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None or isinstance(request.match_info.http_exception, web.HTTPException):
        return "<unmatched>"
    return resource.canonical


def as_api_error(exc: Exception, request: web.Request) -> ApiError:
    """The error for any exception a handler raised (re-raises redirects and other non-error statuses)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return from_http_exception(exc)
    return internal_error(exc, request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error raised below with the common error body."""
    try:
        return await handler(request)
    except Exception as exc:
        return as_api_error(exc, request).response()
