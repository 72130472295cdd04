"""A small synchronous client of the service's REST API (``/api/v1``), for the command line."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

API_PREFIX = "/api/v1"
#: Largest response body read (a page of tenants or a compute record with its decision is far smaller).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class ApiError(Exception):
    """The API answered with an error (``status`` > 0) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class RestClient:
    """Calls ``<base_url>/api/v1<path>`` with a bearer token; JSON in, JSON out."""

    def __init__(self, base_url: str, token: str, timeout_seconds: float = 30.0) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in {"http", "https"}:
            raise ValueError(f"{base_url!r}: the API URL must be http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_seconds = timeout_seconds

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        url = f"{self.base_url}{API_PREFIX}{path}"
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        return f"{url}?{urllib.parse.urlencode(params)}" if params else url

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """The decoded reply of a 2xx answer; :class:`ApiError` for anything else. ``headers``: extra request
        headers (``Idempotency-Key``); they cannot replace the authorization or content headers."""
        data = None if body is None else json.dumps(body).encode()
        headers = {**(headers or {}), "Authorization": f"Bearer {self.token}",
                   "Accept": "application/json, application/problem+json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        # http(s) only: the scheme is checked in __init__.
        request = urllib.request.Request(self.url(path, query), data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds or self.timeout_seconds) as response:  # noqa: S310
                return Reply(response.status, _decode(response.read(MAX_RESPONSE_BYTES)))
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, exc.read(MAX_RESPONSE_BYTES)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "unreachable", f"cannot reach {self.base_url}: {reason}") from None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _api_error(status: int, raw: bytes) -> ApiError:
    """The error of an answer: an RFC 9457 problem (``code``, ``detail``, ``details``), else the older
    ``{"error": {code, message, details}}`` object, else the raw text."""
    body = _decode(raw)
    if isinstance(body, dict) and isinstance(body.get("code"), str) and "status" in body:
        details = body.get("details")
        return ApiError(status, body["code"], str(body.get("detail") or body.get("title") or ""),
                        details if isinstance(details, dict) else None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        details = error.get("details")
        return ApiError(status, str(error.get("code", "error")), str(error.get("message", "")),
                        details if isinstance(details, dict) else None)
    return ApiError(status, f"http-{status}", str(body or "")[:500])
