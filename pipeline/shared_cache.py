"""A cache shared by every worker of the service (Apache Ignite), behind a tiny get/put-with-TTL interface.

What it is for: answers of slow or rate-limited dependencies that every worker asks for alike (the derivatives
engine's quotes, :mod:`pipeline.compute.quote_cache`), so that one worker's answer serves the others for a short
time. It is a cache, never a record: whatever is read back is validated by its user (an entry is untrusted input)
and durable state stays in the changelog tables.

A cache outage must never fail a request. :class:`IgniteSharedCache` turns every Ignite failure into a miss (or a
dropped put), logs the first failure of a streak once, counts each one in
``provisioning_shared_cache_errors_total``, and after a connection failure does not try to connect again for
``retry_after_s`` (a down node must not add a connect timeout to every request), after a failed operation for
a few seconds (a sick node must not add a timeout to every operation of a request). Every operation is bounded by
``timeout_s``.

Implementations: :class:`IgniteSharedCache` (pyignite's asyncio thin client, one cache with an expiry policy per
write), :class:`MemoryCache` (in-process, for tests and single-worker runs) and :class:`NullCache` (caching off).
The worker's composition root (:mod:`pipeline.worker`) builds one with :func:`build_shared_cache`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from pyignite.aio_cache import AioCache
from pyignite.aio_client import AioClient
from pyignite.datatypes.prop_codes import PROP_GROUP_NAME, PROP_NAME

from pipeline.metrics import SHARED_CACHE_ERRORS

if TYPE_CHECKING:
    from pipeline.config import Settings

logger = logging.getLogger(__name__)

#: Longest key and value the caches accept: larger values are not stored (a put is skipped, a get of such a
#: value written by someone else is a miss), so a cache entry can never make a worker read megabytes.
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 4_000_000
#: How long the workers go without the cache after a failed operation (a failed connect: ``retry_after_s``).
OPERATION_FAILURE_PAUSE_S = 5.0


class SharedCache(Protocol):
    """What a user of the shared cache needs. ``get`` returns ``None`` on a miss *and* on any failure."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, ttl_s: float) -> None: ...

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        """Store ``value`` only if ``key`` is absent (a lease): whether this call stored it. ``True`` when the
        cache cannot tell (down, off): the caller then goes ahead as if it held the lease."""
        ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class NullCache:
    """Caching off: every ``get`` misses, ``put`` and ``delete`` do nothing."""

    async def get(self, key: str) -> str | None:
        return None

    async def put(self, key: str, value: str, ttl_s: float) -> None:
        return None

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        return True

    async def delete(self, key: str) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryCache:
    """An in-process TTL cache (tests, and one worker without Ignite): at most ``max_entries``, the oldest
    write evicted first; ``clock`` is monotonic seconds."""

    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    async def put(self, key: str, value: str, ttl_s: float) -> None:
        if ttl_s <= 0 or len(key) > MAX_KEY_CHARS or len(value) > MAX_VALUE_CHARS:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + ttl_s, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.put(key, value, ttl_s)
        return True

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()


class IgniteSharedCache:
    """One Ignite cache (``cache_name``, in cache group ``group``) over pyignite's asyncio thin client.

    Each ``put`` carries its own expiry policy (Ignite drops the entry ``ttl_s`` after the write), so the TTL is
    the writer's choice and changing the setting needs no new cache. ``label`` names the cache in the metrics.
    The client connects in the background on first use (that use, and any until it is connected, is a miss); a
    failed connect pauses the cache for ``retry_after_s``, a failed operation for a few seconds.
    """

    def __init__(
        self,
        host: str,
        port: int,
        cache_name: str,
        *,
        label: str = "shared",
        group: str | None = "service_shared",
        timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        retry_after_s: float = 30.0,
        username: str | None = None,
        password: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._port = port
        self._cache_name = cache_name
        self._group = group
        self.label = label
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._retry_after_s = retry_after_s
        self._credentials = {"username": username, "password": password} if username else {}
        self._clock = clock
        self._client: AioClient | None = None
        self._cache: AioCache | None = None
        self._down_until = 0.0
        self._failing = False  # inside a streak of failures (logged once per streak)
        self._connecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._cache is not None

    async def _connected_cache(self) -> AioCache | None:
        """The cache when connected. Otherwise ``None`` at once (the request goes on without it), with a connect
        started in the background unless one is running or the cache is paused: no request waits for a connect."""
        if self._cache is not None:
            return self._cache
        self._start_connect()
        return None

    def _start_connect(self) -> asyncio.Task[None] | None:
        if self._connecting is None and self._clock() >= self._down_until:
            self._connecting = asyncio.get_running_loop().create_task(
                self._connect(), name=f"shared-cache-connect-{self.label}"
            )
        return self._connecting

    async def connect(self) -> bool:
        """Connect now and wait for it (start-up, tests); whether the cache is usable. A paused cache (after a
        failure) does not try."""
        if self._cache is None:
            task = self._start_connect()
            if task is not None:
                await asyncio.shield(task)
        return self._cache is not None

    async def _connect(self) -> None:
        client = AioClient(handshake_timeout=self._connect_timeout_s, **self._credentials)
        try:
            await asyncio.wait_for(client.connect(self._host, self._port), self._connect_timeout_s)
            settings: dict[int, str] = {PROP_NAME: self._cache_name}
            if self._group:
                settings[PROP_GROUP_NAME] = self._group
            cache = await asyncio.wait_for(client.get_or_create_cache(settings), self._connect_timeout_s)
        except asyncio.CancelledError:  # closed while connecting
            await self._close_client(client)
            raise
        except Exception as exc:  # any failure of a cache is a miss, never the request's failure
            self._down_until = self._clock() + self._retry_after_s
            self._failed("connect", exc)
            await self._close_client(client)
            return
        finally:
            self._connecting = None
        self._client, self._cache = client, cache

    def _failed(self, operation: str, exc: BaseException) -> None:
        SHARED_CACHE_ERRORS.labels(self.label, operation).inc()
        if not self._failing:
            self._failing = True
            logger.warning("shared cache %s (Ignite %s:%s, cache %s) failed on %s: %s: %s; requests go on without it",
                           self.label, self._host, self._port, self._cache_name, operation, type(exc).__name__, exc)
        else:
            logger.debug("shared cache %s failed on %s: %s", self.label, operation, exc)

    async def _broken(self, operation: str, exc: BaseException) -> None:
        """An operation failed (a timeout, a lost connection): count it, drop the connection (the next call makes a
        new one; pyignite's own reconnect may be stuck) and do without the cache for a few seconds, so that one
        request does not wait for a sick node once per operation."""
        self._failed(operation, exc)
        self._down_until = self._clock() + min(self._retry_after_s, OPERATION_FAILURE_PAUSE_S)
        await self._drop_connection()

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("shared cache %s (Ignite %s:%s) answers again", self.label, self._host, self._port)

    async def _drop_connection(self) -> None:
        client, self._client, self._cache = self._client, None, None
        if client is not None:
            await self._close_client(client)

    @staticmethod
    async def _close_client(client: AioClient) -> None:
        try:
            await asyncio.wait_for(client.close(), 2.0)
        except Exception:
            logger.debug("ignite client close failed", exc_info=True)

    async def get(self, key: str) -> str | None:
        if len(key) > MAX_KEY_CHARS:
            return None
        cache = await self._connected_cache()
        if cache is None:
            return None
        try:
            value = await cache.get(key, timeout=self._timeout_s)
        except Exception as exc:
            await self._broken("get", exc)
            return None
        self._succeeded()
        if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
            return None  # not ours, or too large to trust: a miss (the reader validates what it does get)
        return value

    async def put(self, key: str, value: str, ttl_s: float) -> None:
        ttl_ms = int(ttl_s * 1000)
        if ttl_ms <= 0 or len(key) > MAX_KEY_CHARS or len(value) > MAX_VALUE_CHARS:
            return
        cache = await self._connected_cache()
        if cache is None:
            return
        try:
            ttl = timedelta(milliseconds=ttl_ms)
            await cache.with_expire_policy(create=ttl, update=ttl).put(key, value, timeout=self._timeout_s)
        except Exception as exc:
            await self._broken("put", exc)
            return
        self._succeeded()

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        ttl_ms = int(ttl_s * 1000)
        if ttl_ms <= 0 or len(key) > MAX_KEY_CHARS or len(value) > MAX_VALUE_CHARS:
            return True
        cache = await self._connected_cache()
        if cache is None:
            return True
        try:
            ttl = timedelta(milliseconds=ttl_ms)
            added = await cache.with_expire_policy(create=ttl, update=ttl).put_if_absent(
                key, value, timeout=self._timeout_s
            )
        except Exception as exc:
            await self._broken("add", exc)
            return True
        self._succeeded()
        return bool(added)

    async def delete(self, key: str) -> None:
        if len(key) > MAX_KEY_CHARS:
            return
        cache = await self._connected_cache()
        if cache is None:
            return
        try:
            await cache.remove_key(key, timeout=self._timeout_s)
        except Exception as exc:
            await self._broken("delete", exc)
            return
        self._succeeded()

    async def destroy(self) -> None:
        """Destroy the Ignite cache (tests' own caches only: the service's cache is shared by every worker)."""
        if await self.connect() and self._cache is not None:
            await self._cache.destroy()
        await self.close()

    async def close(self) -> None:
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        await self._drop_connection()


def build_shared_cache(settings: Settings) -> SharedCache:
    """The worker's shared cache from settings: Ignite when ``SHARED_CACHE_ENABLED``, else :class:`NullCache`."""
    if not settings.shared_cache_enabled:
        return NullCache()
    return IgniteSharedCache(
        settings.ignite_host,
        settings.ignite_port,
        settings.shared_cache_name,
        label="compute-quotes",
        timeout_s=settings.shared_cache_timeout_seconds,
        retry_after_s=settings.shared_cache_retry_seconds,
    )
