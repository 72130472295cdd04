"""One error format for every error the web layer answers: RFC 9457 problem details.

Every 4xx/5xx of the API, the internal routes and the dashboard's routes is ``application/problem+json``::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "tenant 'x' does not exist", "instance": "/api/v1/tenants/x",
     "code": "tenant-not-found", "details": {"tenant_id": "x"},
     "error": {"code": "tenant-not-found", "message": "tenant 'x' does not exist", "details": {...}}}

``type`` is ``about:blank`` and ``title`` the status's phrase (RFC 9457, 4.2.1): the service publishes no
problem-type documents, and the stable machine-readable kind of problem is the ``code`` extension member, as
it was before. ``instance`` is the request's path (left out past 256 characters); for a 500 it is the UUID URN
of ``details.error_id``, the id the log line of the exception carries. ``error`` is the body of earlier
versions, kept unchanged for their clients (and for workers of an earlier version during a rolling upgrade,
which relay each other's errors).

Handlers raise :class:`ApiError`; aiohttp's own exceptions (404 for an unknown path, 405, 413...) and
unexpected exceptions are turned into the same shape by :func:`error_middleware`. A 500 never carries the
exception's text: it carries an ``error_id`` that the log line of the exception also carries.
"""

from __future__ import annotations

import http
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The media type of every error response (RFC 9457).
PROBLEM_JSON = "application/problem+json"
#: Longest path echoed back as ``instance``: a longer one is the client's junk, and a cut one would name
#: another resource, so it is left out.
_MAX_INSTANCE = 256

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

    def response(self, instance: str | None = None) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers, instance)


def title_of(status: int) -> str:
    """The status's reason phrase (the ``title`` of an ``about:blank`` problem)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error" if status < 500 else "Server Error"


def instance_of(request: web.Request) -> str | None:
    """The ``instance`` of a problem with ``request``: its path as sent (percent-encoded), None if too long."""
    path = request.rel_url.raw_path
    return path if len(path) <= _MAX_INSTANCE else None


def error_body(
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    status: int = 500,
    instance: str | None = None,
) -> dict[str, Any]:
    """The problem details document of an error (see the module docstring)."""
    shown = dict(details or {})
    error_id = shown.get("error_id")
    if status >= 500 and isinstance(error_id, str):
        try:  # the occurrence is the logged one, not the path: its id as a UUID URN (RFC 9562)
            instance = uuid.UUID(hex=error_id).urn
        except ValueError:
            pass
    body: dict[str, Any] = {"type": "about:blank", "title": title_of(status), "status": status, "detail": message}
    if instance:
        body["instance"] = instance
    body.update(code=code, details=shown, error={"code": code, "message": message, "details": shown})
    return body


def problem_of(body: Any) -> tuple[str, str, dict[str, Any]] | None:
    """``(code, message, details)`` of an error body relayed from another worker: the problem's members, or
    the ``error`` object alone (a worker of an earlier version); None when it is neither."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(body.get("code"), str):
        details = body.get("details")
        message = body.get("detail")
        return body["code"], str(message) if message is not None else "error", \
            dict(details) if isinstance(details, dict) else {}
    if isinstance(error, dict):
        details = error.get("details")
        return str(error.get("code", "error")), str(error.get("message", "error")), \
            dict(details) if isinstance(details, dict) else {}
    return None


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> web.Response:
    """The problem+json response of an error (the only place the web layer builds one)."""
    return web.json_response(
        error_body(code, message, details, status=status, instance=instance), status=status,
        headers=dict(headers or {}), content_type=PROBLEM_JSON,
    )


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
        return as_api_error(exc, request).response(instance_of(request))
