"""One way to call another worker: one shared HTTP session, the transport rule, bounded answers, and one more
try at the new owner when a rebalance moved the tenant during the call.

Every route that forwards to the worker owning a tenant, or asks every peer for its part of a list, goes
through :class:`PeerClient`: a peer is another process, so its answer is read like any input from outside
(size bounded before parsing, depth bounded by :mod:`pipeline.bounded_json`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from pipeline import bounded_json
from web.errors import ApiError
from web.peers import insecure_transport, transport_allowed

logger = logging.getLogger(__name__)

#: Largest answer read from a peer: a list of every tenant or policy a worker holds, far above any real one.
MAX_PEER_RESPONSE_BYTES = 16 * 1024 * 1024
#: How long a caller waits before asking for the owner again after a failed call (a rebalance in progress).
REROUTE_PAUSE_S = 0.5


class PeerUnavailable(Exception):
    """The peer did not answer (connection refused or reset, timeout, an answer too large to read)."""

    def __init__(self, url: URL, reason: str) -> None:
        super().__init__(f"{url.with_path('/').with_query({})}: {reason}")
        self.url = url
        self.reason = reason


def owner_unavailable() -> ApiError:
    # The owner died or is rebalancing: its partitions move to a live worker within the session timeout (at
    # once with KAFKA_GROUP_INSTANCE_ID); the client retries, as for not-ready.
    return ApiError(503, "owner-unavailable", "the worker owning this tenant did not answer; retry shortly",
                    headers={"Retry-After": "5"})


@dataclass(frozen=True)
class PeerReply:
    """A peer's answer: status, raw body (at most :data:`MAX_PEER_RESPONSE_BYTES`) and headers (the caller picks
    the ones it relays)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON (bounded); :class:`~pipeline.bounded_json.JsonRefused` when it is not."""
        return bounded_json.loads(self.body, max_bytes=MAX_PEER_RESPONSE_BYTES)


async def _bounded_body(url: URL, response: aiohttp.ClientResponse) -> bytes:
    """The body, read in chunks and given up as soon as it passes :data:`MAX_PEER_RESPONSE_BYTES`."""
    too_large = PeerUnavailable(url, f"answer larger than {MAX_PEER_RESPONSE_BYTES} bytes")
    if (response.content_length or 0) > MAX_PEER_RESPONSE_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_PEER_RESPONSE_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class PeerClient:
    """Calls to the other workers over one ``aiohttp.ClientSession`` (created on first use, in the worker's
    event loop; :meth:`close` at shutdown)."""

    def __init__(self, network_encrypted: bool = False) -> None:
        self.network_encrypted = network_encrypted
        self._session: aiohttp.ClientSession | None = None

    def reachable(self, url: URL) -> URL:
        """``url``, if a bearer token or the peer secret may be sent to it (web/peers.py: the transport rule);
        else the 502 problem of :func:`~web.peers.insecure_transport`."""
        if not transport_allowed(url, self.network_encrypted):
            raise insecure_transport(url)
        return url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, url: URL, method: str = "GET", *, headers: Mapping[str, str] | None = None, json_body: Any = None,
        timeout_s: float = 10.0,
    ) -> PeerReply:
        """One call; :class:`PeerUnavailable` when the peer does not answer in ``timeout_s``."""
        self.reachable(url)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._client().request(method, url, headers=dict(headers or {}), json=json_body,
                                              timeout=timeout) as response:
                body = await _bounded_body(url, response)
                return PeerReply(response.status, body, dict(response.headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(url, type(exc).__name__) from None

    async def to_owner(
        self, owner_of: Callable[[], URL | None], path: str, method: str = "GET", *,
        query: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None, json_body: Any = None,
        timeout_s: float = 10.0,
    ) -> PeerReply | None:
        """Call the owner ``owner_of()`` names at ``path``; ``None`` when this worker is (or became) the owner.

        If the owner does not answer and a rebalance has meanwhile given the tenant to another worker, that one
        is asked once (only for a GET: another method may have taken effect before the answer was lost);
        otherwise the 503 ``owner-unavailable`` problem is raised.
        """
        owner = owner_of()
        for attempt in (1, 2):
            if owner is None:
                return None
            try:
                return await self.request(owner.with_path(path).with_query(query or {}), method, headers=headers,
                                          json_body=json_body, timeout_s=timeout_s)
            except PeerUnavailable as exc:
                logger.warning("call to the owning worker failed (attempt %d): %s", attempt, exc)
                if attempt == 2 or method != "GET":
                    break
                await asyncio.sleep(REROUTE_PAUSE_S)
                moved = owner_of()
                if moved == owner:
                    break
                owner = moved
        raise owner_unavailable()
