"""A small JSON-over-HTTP client for the REST backends (Pulsar admin, OpenProject, the search REST adapter).

Paths are built from validated names with :func:`path` (each segment percent-encoded, ``/`` included) and
sent as already-encoded URLs, so nothing is re-interpreted on the way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from pipeline.provisioners.base import http_error
from pipeline.provisioners.naming import path_segment


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic authentication."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def path(*segments: str, raw_prefix: str = "") -> str:
    """``raw_prefix`` (a constant like ``/admin/v2``) followed by each segment, percent-encoded."""
    return raw_prefix.rstrip("/") + "".join("/" + path_segment(segment) for segment in segments)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    data: Any
    text: str
    headers: Mapping[str, str]  # case-insensitive


class JsonHttp:
    """An aiohttp session made lazily in the running loop (re-made if that loop changed or it was closed)."""

    def __init__(
        self,
        base_url: str,
        *,
        resource: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.resource = resource
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._ssl = ssl_context  # None: aiohttp's default verification
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            if self._session is not None and not self._session.closed and self._loop is loop:
                await self._session.close()
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
            self._loop = loop
        return self._session

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        expect: Iterable[int] = (200,),
        what: str | None = None,
    ) -> HttpResponse:
        """Send one request; a status outside ``expect`` raises the transient/permanent error for it."""
        session = await self._get_session()
        url = URL(self.base_url + url_path, encoded=True)
        if params:
            url = url.update_query(params)
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        async with session.request(method, url, **kwargs) as response:
            text = await response.text()
            data: Any = None
            if text:
                try:
                    data = json.loads(text)
                except ValueError:
                    data = None
            result = HttpResponse(response.status, data, text, CIMultiDict(response.headers))
        if result.status not in set(expect):
            raise http_error(self.resource, result.status, what or f"{method} {url_path}", text)
        return result

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
