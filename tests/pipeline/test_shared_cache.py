"""The workers' shared cache: the in-process cache (unit), and the Ignite cache against the local Ignite node,
with two clients standing for two workers (integration). Each test uses a cache of its own (``service_test_*``,
destroyed afterwards): the tenant caches on that node belong to other tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devstack.derivatives_standin import running_standin
from pipeline.compute.catalog import PACKAGED_CATALOG_DIR, Offer, load_catalogs, real_catalog_paths
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.quote_cache import CachedQuotes
from pipeline.config import Settings
from pipeline.shared_cache import (
    OPERATION_FAILURE_PAUSE_S,
    IgniteSharedCache,
    MemoryCache,
    NullCache,
    build_shared_cache,
)


@pytest.fixture(scope="module")
def real_offers() -> list[Offer]:
    return load_catalogs(real_catalog_paths(PACKAGED_CATALOG_DIR))


# ----- unit ---------------------------------------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_cache_expires_and_evicts() -> None:
    ticks = Ticks()
    cache = MemoryCache(max_entries=2, clock=ticks)
    await cache.put("a", "1", 5.0)
    await cache.put("b", "2", 5.0)
    assert await cache.get("a") == "1"
    ticks.now = 5.0
    assert await cache.get("a") is None
    await cache.put("c", "3", 5.0)
    await cache.put("d", "4", 5.0)  # the oldest write (b) goes
    assert [await cache.get(k) for k in "bcd"] == [None, "3", "4"]
    await cache.delete("c")
    assert await cache.get("c") is None


async def test_memory_cache_refuses_oversized_and_timeless_entries() -> None:
    cache = MemoryCache()
    await cache.put("k" * 257, "v", 5.0)
    await cache.put("big", "v" * 4_000_001, 5.0)
    await cache.put("zero", "v", 0.0)
    assert [await cache.get(k) for k in ("k" * 257, "big", "zero")] == [None, None, None]


def test_the_settings_choose_the_cache() -> None:
    assert isinstance(build_shared_cache(Settings(shared_cache_enabled=False)), NullCache)
    built = build_shared_cache(Settings(shared_cache_name="service_quotes_x", shared_cache_timeout_seconds=0.2))
    assert isinstance(built, IgniteSharedCache) and built.label == "compute-quotes"


@pytest.mark.parametrize("name", ["tenant_acme", "Service_x", "service_", "service_" + "x" * 57, "quotes"])
def test_the_cache_name_cannot_be_a_tenant_cache(name: str) -> None:
    with pytest.raises(ValueError, match="shared_cache_name"):
        Settings(shared_cache_name=name)


@pytest.mark.parametrize("ttl", [0.5, 601, float("inf")])
def test_the_ttl_is_bounded(ttl: float) -> None:
    with pytest.raises(ValueError, match="shared_cache_quote_ttl_seconds"):
        Settings(shared_cache_quote_ttl_seconds=ttl)


def _errors(operation: str) -> float:
    value = REGISTRY.get_sample_value("provisioning_shared_cache_errors_total",
                                      {"cache": "test-down", "operation": operation})
    return value or 0.0


async def test_an_unreachable_ignite_is_a_miss_and_is_not_retried_at_once() -> None:
    """Nothing listens on port 9 (discard): every call falls through, the connect is tried once per window."""
    ticks = Ticks()
    cache = IgniteSharedCache("127.0.0.1", 9, "service_test_down", label="test-down", connect_timeout_s=2.0,
                              retry_after_s=30.0, clock=ticks)
    before = _errors("connect")
    assert await cache.get("k") is None  # a miss at once; the connect runs in the background
    assert not await cache.connect()  # (waited for here)
    assert _errors("connect") - before == 1
    await cache.put("k", "v", 5.0)
    await cache.delete("k")
    assert await cache.get("k") is None
    assert not await cache.connect()
    assert _errors("connect") - before == 1  # one failed connect; nothing tried again within the retry window
    ticks.now = 30.0
    assert not await cache.connect()
    assert _errors("connect") - before == 2
    assert not cache.connected
    await cache.close()


class SickCache:
    """Stands for a connected pyignite cache whose node stopped answering in time."""

    def __init__(self) -> None:
        self.calls = 0

    async def get(self, key: str, **_: Any) -> str:
        self.calls += 1
        raise TimeoutError

    async def put(self, key: str, value: str, **_: Any) -> None:
        self.calls += 1
        raise TimeoutError

    def with_expire_policy(self, **_: Any) -> SickCache:
        return self


async def test_a_failed_operation_pauses_the_cache_for_a_few_seconds() -> None:
    ticks = Ticks()
    cache = IgniteSharedCache("127.0.0.1", 9, "service_test_sick", label="test-down", retry_after_s=30.0, clock=ticks)
    sick = SickCache()
    cache._cache = sick  # type: ignore[assignment]  # as if connected to a node that then fell sick
    before_get, before_connect = _errors("get"), _errors("connect")
    assert await cache.get("k") is None
    await cache.put("k", "v", 5.0)  # the same request's next operation does not wait for the node again
    assert await cache.get("k") is None
    assert sick.calls == 1 and _errors("get") - before_get == 1 and not cache.connected
    assert not await cache.connect()  # paused: no connect is tried
    assert _errors("connect") - before_connect == 0
    ticks.now = OPERATION_FAILURE_PAUSE_S
    assert not await cache.connect()  # the pause is over: a new connection is tried (nothing listens on 9)
    assert _errors("connect") - before_connect == 1
    await cache.close()


async def test_quotes_go_on_when_ignite_is_unreachable(real_offers: list[Offer]) -> None:
    async with running_standin(real_offers) as standin, DerivativesEngineClient(standin.url) as engine:
        worker_a, worker_b = (
            CachedQuotes(engine, IgniteSharedCache("127.0.0.1", 9, "service_test_down", label="test-down"), 10.0)
            for _ in range(2)
        )
        first = await worker_a.quote(gpu_name="H100")
        second = await worker_b.quote(gpu_name="H100")
        for worker in (worker_a, worker_b):
            await worker.cache.close()
    assert first.offers and first.quote_id != second.quote_id  # both from the engine: nothing was shared
    assert engine.calls["quote"] == 2 and worker_a.misses == worker_b.misses == 1


# ----- integration: the local Ignite --------------------------------------------------------------------------

MakeCache = Callable[[], Awaitable[IgniteSharedCache]]



@pytest.fixture
async def ignite_caches(
    ignite_service: dict[str, str],
) -> AsyncIterator[MakeCache]:
    """``await make()``: another client (another worker) of one cache of this test's own, connected."""
    settings = Settings(**{key.lower(): value for key, value in ignite_service.items()})  # type: ignore[arg-type]
    name = f"service_test_{uuid.uuid4().hex[:12]}"
    made: list[IgniteSharedCache] = []

    async def make() -> IgniteSharedCache:
        cache = IgniteSharedCache(settings.ignite_host, settings.ignite_port, name, label="test",
                                  timeout_s=30.0, connect_timeout_s=30.0)  # generous: a loaded CI machine
        made.append(cache)
        assert await cache.connect()
        return cache

    try:
        yield make
    finally:
        if made:
            await made[0].destroy()
        for cache in made:
            await cache.close()


async def poll(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.25)
    return False


@pytest.mark.integration
async def test_a_value_one_worker_puts_is_read_by_another(ignite_caches: MakeCache) -> None:
    first, second = await ignite_caches(), await ignite_caches()
    await first.put("k", "value of the first", 300.0)
    assert await second.get("k") == "value of the first"
    assert first.connected and second.connected
    await second.delete("k")
    assert await first.get("k") is None


@pytest.mark.integration
async def test_ignite_expires_entries_after_their_ttl(ignite_caches: MakeCache) -> None:
    first, second = await ignite_caches(), await ignite_caches()
    await first.put("short", "v", 1.0)
    await first.put("long", "v", 300.0)

    async def short_gone() -> bool:
        return await second.get("short") is None

    assert await poll(short_gone)
    assert await second.get("long") == "v"


@pytest.mark.integration
async def test_a_quote_cached_by_one_worker_is_served_to_another(
    ignite_caches: MakeCache, real_offers: list[Offer]
) -> None:
    async with running_standin(real_offers) as standin:
        async with DerivativesEngineClient(standin.url) as engine_a, DerivativesEngineClient(standin.url) as engine_b:
            worker_a = CachedQuotes(engine_a, await ignite_caches(), 300.0)
            worker_b = CachedQuotes(engine_b, await ignite_caches(), 300.0)
            a = await worker_a.quote(gpu_name="H100", providers=["lambda", "nebius"])
            b = await worker_b.quote(gpu_name="h100", providers=["Nebius", "Lambda"])
            other = await worker_b.quote(gpu_name="A100")
    assert a.offers and a == b  # the same quote, offer for offer
    assert {o.gpu_name for o in other.offers} == {"A100"}
    assert (engine_a.calls["quote"], engine_b.calls["quote"]) == (1, 1)  # b's second question was another one
    assert (worker_b.hits, worker_b.misses) == (1, 1)


@pytest.mark.integration
async def test_a_forged_entry_in_ignite_is_dropped(
    ignite_caches: MakeCache, real_offers: list[Offer]
) -> None:
    from pipeline.compute.quote_cache import QuoteQuery

    forger = await ignite_caches()
    key = QuoteQuery.of(gpu_name="H100").key()
    forged: dict[str, Any] = {"v": 1, "key": key, "quote_id": "q-forged", "offers": []}
    await forger.put(key, str(forged), 300.0)
    async with running_standin(real_offers) as standin, DerivativesEngineClient(standin.url) as engine:
        worker = CachedQuotes(engine, await ignite_caches(), 300.0)
        quote = await worker.quote(gpu_name="H100")
    assert quote.quote_id != "q-forged" and quote.offers
    assert worker.invalid == 1 and engine.calls["quote"] == 1
    raw = await forger.get(key)
    assert raw is not None and "q-forged" not in raw  # replaced by the engine's answer
