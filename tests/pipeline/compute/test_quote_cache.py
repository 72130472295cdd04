"""The engine's quotes through the shared cache: key normalization, read-back validation (Hypothesis), and
:class:`CachedQuotes` over the in-process cache with a counting fake engine (no services needed)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.compute import quote_cache
from pipeline.compute.backend import BackendUnavailable
from pipeline.compute.catalog import Offer
from pipeline.compute.engine_client import Quote
from pipeline.compute.quote_cache import (
    MAX_TTL_S,
    CachedQuotes,
    InvalidEntry,
    QuoteQuery,
    read_entry,
    write_entry,
)
from pipeline.shared_cache import MemoryCache

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def offer(i: int = 0, **fields: Any) -> Offer:
    base: dict[str, Any] = {
        "offer_id": f"lambda/us-east-1/gpu_{i}x_h100/on_demand", "provider": "lambda", "region": "us-east-1",
        "instance_type": f"gpu_{i}x_h100", "gpu_name": "H100", "gpu_count": 1, "vcpus": 26.0, "memory_gib": 200.0,
        "price_per_hour": 2.49 + i, "source": "engine", "available": 3, "capacity": 4,
    }
    return Offer.model_validate({**base, **fields})


def quote(quote_id: str = "q-1", valid_for_s: float = 300.0, offers: list[Offer] | None = None) -> Quote:
    return Quote(quote_id=quote_id, valid_until=NOW + timedelta(seconds=valid_for_s),
                 offers=offers if offers is not None else [offer(0), offer(1)])


# ----- key normalization ------------------------------------------------------------------------------------


def test_equivalent_queries_share_a_key() -> None:
    a = QuoteQuery.of(gpu_name="H100", providers=["Lambda", "nebius"], regions=["us-east-1"])
    b = QuoteQuery.of(gpu_name=" h100 ", providers=["NEBIUS", "lambda", "lambda"], regions=[" US-EAST-1"])
    assert a == b
    assert a.key() == b.key()
    assert QuoteQuery.of(providers=[]).key() == QuoteQuery.of(providers=None).key() == QuoteQuery.of().key()


def test_different_queries_have_different_keys() -> None:
    keys = {
        QuoteQuery.of().key(),
        QuoteQuery.of(gpu_name="H100").key(),
        QuoteQuery.of(gpu_name="A100").key(),
        QuoteQuery.of(gpu_name="H100", providers=["lambda"]).key(),
        QuoteQuery.of(gpu_name="H100", regions=["lambda"]).key(),  # the same name as a region is another query
        QuoteQuery.of(tenant_id="acme").key(),
        QuoteQuery.of(tenant_id="Acme").key(),  # tenant ids are case-sensitive
    }
    assert len(keys) == 7


_names = st.text(alphabet="abcdefghXYZ-_0123456789 ", min_size=1, max_size=12).filter(lambda s: s.strip())


@settings(deadline=None)
@given(gpu=_names, providers=st.lists(_names, max_size=5), regions=st.lists(_names, max_size=5), data=st.data())
def test_key_ignores_case_order_and_duplicates(
    gpu: str, providers: list[str], regions: list[str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(providers + providers[:1]))
    swapped = [p.swapcase() for p in data.draw(st.permutations(regions))]
    a = QuoteQuery.of(gpu_name=gpu, providers=providers, regions=regions)
    b = QuoteQuery.of(gpu_name=f" {gpu.upper()} ", providers=shuffled, regions=swapped)
    assert a.key() == b.key()
    assert len(a.key()) < 128


async def test_workers_of_different_engines_never_share_a_quote() -> None:
    assert QuoteQuery.of().key("http://engine-a") != QuoteQuery.of().key("http://engine-b")
    shared = MemoryCache()
    engine = FakeEngine()
    clock = Clock()
    a = CachedQuotes(engine, shared, 10.0, namespace="http://engine-a", clock=clock.utc)
    b = CachedQuotes(engine, shared, 10.0, namespace="http://engine-b", clock=clock.utc)
    assert (await a.quote(gpu_name="H100")).quote_id == "q-1"
    assert (await b.quote(gpu_name="H100")).quote_id == "q-2"
    assert b.hits == 0 and len(engine.calls) == 2


async def test_filters_beyond_the_keys_bounds_ask_for_the_unfiltered_quote() -> None:
    engine = FakeEngine()
    quotes = CachedQuotes(engine, MemoryCache(), 10.0, clock=Clock().utc)
    many = [f"p{i}" for i in range(100)]
    await quotes.quote(gpu_name="H100", providers=many)
    await quotes.quote(gpu_name="H100", regions=["r" * 200])
    assert engine.calls == [{"tenant_id": None, "gpu_name": "h100", "providers": None, "regions": None}]


# ----- read-back validation ---------------------------------------------------------------------------------


def entry(key: str = "quote:v1:k", q: Quote | None = None, ttl_s: float = 30.0) -> dict[str, Any]:
    written = write_entry(key, q or quote(), NOW, ttl_s)
    assert written is not None
    result: dict[str, Any] = json.loads(written[0])
    return result


def test_an_entry_reads_back_as_the_quote_it_was_written_from() -> None:
    q = quote()
    written = write_entry("quote:v1:k", q, NOW, 30.0)
    assert written is not None
    raw, ttl = written
    assert ttl == 30.0
    assert read_entry(raw, "quote:v1:k", NOW + timedelta(seconds=29)) == q


def test_ttl_never_outlives_the_quote() -> None:
    written = write_entry("k", quote(valid_for_s=5.0), NOW, 30.0)
    assert written is not None and written[1] == 5.0
    assert write_entry("k", quote(valid_for_s=0.2), NOW, 30.0) is None  # about to lapse: not worth caching


def test_expired_entries_are_misses() -> None:
    raw = json.dumps(entry(ttl_s=10.0))
    assert read_entry(raw, "quote:v1:k", NOW + timedelta(seconds=10)) is None
    lapsed_quote = json.dumps(entry(q=quote(valid_for_s=60.0), ttl_s=10.0))
    assert read_entry(lapsed_quote, "quote:v1:k", NOW + timedelta(seconds=61)) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(key="quote:v1:other"), "another key"),
        (lambda e: e.update(expires_at=(NOW + timedelta(seconds=MAX_TTL_S + 60)).isoformat()), "longer"),
        (lambda e: e.update(expires_at="2026-12-07T12:00:30"), "malformed"),  # naive datetime
        (lambda e: e.update(v=2), "malformed"),
        (lambda e: e.update(extra=1), "malformed"),
        (lambda e: e["offers"][0].update(price_per_hour=-1), "malformed"),
        (lambda e: e["offers"][0].update(vcpus=1e300), "malformed"),
        (lambda e: e["offers"][0].update(source="catalog"), "malformed"),
        (lambda e: e["offers"][0].update(provider="x" * 1000), "malformed"),
        (lambda e: e["offers"][0].pop("offer_id"), "malformed"),
        (lambda e: e.update(offers="none"), "malformed"),
    ],
)
def test_bad_entries_are_invalid(mutate: Any, reason: str) -> None:
    e = entry()
    mutate(e)
    with pytest.raises(InvalidEntry, match=reason):
        read_entry(json.dumps(e), "quote:v1:k", NOW)


def test_non_finite_numbers_are_invalid() -> None:
    e = entry()
    e["offers"][0]["price_per_hour"] = float("nan")
    raw = json.dumps(e)
    assert "NaN" in raw
    with pytest.raises(InvalidEntry):
        read_entry(raw, "quote:v1:k", NOW)


def test_oversized_entries_are_invalid() -> None:
    with pytest.raises(InvalidEntry, match="characters"):
        read_entry(" " * 4_000_001, "quote:v1:k", NOW)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)  # no timing: a loaded CI machine
@given(raw=st.one_of(st.text(max_size=200), _json.map(json.dumps)))
def test_arbitrary_values_are_invalid_never_a_crash(raw: str) -> None:
    with pytest.raises(InvalidEntry):
        read_entry(raw, "quote:v1:k", NOW)


_field_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**12), max_value=10**12), st.floats(allow_nan=False),
    st.text(max_size=300), st.lists(st.integers(), max_size=2),
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200, deadline=None)
@given(field=st.sampled_from(["key", "expires_at", "quote_id", "valid_until", "v", "offers"]), value=_field_values)
def test_a_changed_envelope_field_reads_back_as_a_quote_a_miss_or_invalid(field: str, value: Any) -> None:
    e = entry()
    e[field] = value
    try:
        result = read_entry(json.dumps(e), "quote:v1:k", NOW)
    except InvalidEntry:
        return
    assert field != "key"  # an entry of another key is never read back
    assert result is None or isinstance(result, Quote)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300, deadline=None)
@given(
    field=st.sampled_from(sorted(offer().model_dump().keys())),
    value=_field_values,
)
def test_a_changed_offer_field_yields_a_valid_offer_or_invalid(field: str, value: Any) -> None:
    e = entry()
    e["offers"][0][field] = value
    try:
        result = read_entry(json.dumps(e), "quote:v1:k", NOW)
    except InvalidEntry:
        return
    assert result is not None
    changed = result.offers[0]
    assert changed.source == "engine"
    assert changed.price_per_hour >= 0 and changed.vcpus >= 0 and changed.memory_gib >= 0
    assert len(changed.offer_id) <= 256 and len(changed.provider) <= 128


# ----- CachedQuotes over the in-process cache -----------------------------------------------------------------


class FakeEngine:
    """Answers quotes with fresh ids and counts the calls; ``fail`` makes the next calls raise."""

    def __init__(self, valid_for_s: float = 300.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.valid_for_s = valid_for_s
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def quote(self, *, tenant_id: str | None = None, gpu_name: str | None = None,
                    providers: list[str] | None = None, regions: list[str] | None = None) -> Quote:
        self.calls.append({"tenant_id": tenant_id, "gpu_name": gpu_name, "providers": providers, "regions": regions})
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise BackendUnavailable("engine down")
        return quote(f"q-{len(self.calls)}", self.valid_for_s)


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.mono = 0.0

    def utc(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


async def test_two_workers_share_one_engine_call_within_the_ttl() -> None:
    clock = Clock()
    shared = MemoryCache(clock=clock.monotonic)
    engine = FakeEngine()
    first, second = (CachedQuotes(engine, shared, 10.0, clock=clock.utc) for _ in range(2))
    a = await first.quote(gpu_name="H100", providers=["lambda"])
    b = await second.quote(gpu_name="h100", providers=["LAMBDA"])
    assert a == b and a.quote_id == "q-1"
    assert engine.calls == [{"tenant_id": None, "gpu_name": "h100", "providers": ["lambda"], "regions": None}]
    assert (first.misses, first.hits, second.hits) == (1, 0, 1)
    clock.advance(10.0)
    c = await second.quote(gpu_name="H100", providers=["lambda"])
    assert c.quote_id == "q-2"  # the TTL passed: the engine is asked again
    assert len(engine.calls) == 2


async def test_a_worker_answers_a_key_it_holds_until_the_entry_stops_counting() -> None:
    clock = Clock()
    shared = MemoryCache(clock=clock.monotonic)
    engine = FakeEngine()
    worker = CachedQuotes(engine, shared, 10.0, clock=clock.utc)
    first = await worker.quote(gpu_name="H100")
    await shared.delete(QuoteQuery.of(gpu_name="H100").key())  # the near copy does not ask the shared cache
    clock.advance(9.9)
    assert await worker.quote(gpu_name="H100") is first
    assert (worker.near_hits, worker.hits, worker.misses, len(engine.calls)) == (1, 0, 1, 1)
    clock.advance(0.1)
    assert (await worker.quote(gpu_name="H100")).quote_id == "q-2"  # expired: Ignite (gone), then the engine


async def test_a_shared_hit_is_kept_at_hand_no_longer_than_the_shared_entry() -> None:
    clock = Clock()
    shared = MemoryCache(clock=clock.monotonic)
    engine = FakeEngine()
    writer, reader = (CachedQuotes(engine, shared, 10.0, clock=clock.utc) for _ in range(2))
    await writer.quote(regions=["eu"])
    clock.advance(6.0)
    await reader.quote(regions=["eu"])  # a shared hit with 4 s left
    await reader.quote(regions=["eu"])
    assert (reader.hits, reader.near_hits) == (1, 1)
    clock.advance(4.0)
    assert (await reader.quote(regions=["eu"])).quote_id == "q-2"
    assert len(engine.calls) == 2


async def test_an_invalid_entry_is_dropped_and_the_engine_answers() -> None:
    clock = Clock()
    shared = MemoryCache(clock=clock.monotonic)
    engine = FakeEngine()
    quotes = CachedQuotes(engine, shared, 10.0, clock=clock.utc)
    key = QuoteQuery.of(gpu_name="H100").key()
    await shared.put(key, '{"v": 1, "key": "forged"}', 10.0)
    assert (await quotes.quote(gpu_name="H100")).quote_id == "q-1"
    assert quotes.invalid == 1 and len(engine.calls) == 1
    raw = await shared.get(key)  # replaced by the engine's answer
    assert raw is not None and read_entry(raw, key, clock.now) == await quotes.quote(gpu_name="H100")
    assert len(engine.calls) == 1


async def test_concurrent_misses_of_one_worker_make_one_engine_call() -> None:
    engine = FakeEngine()
    engine.gate = asyncio.Event()
    quotes = CachedQuotes(engine, MemoryCache(), 10.0)
    waiting = [asyncio.create_task(quotes.quote(gpu_name="A100")) for _ in range(5)]
    await asyncio.sleep(0)
    engine.gate.set()
    results = await asyncio.gather(*waiting)
    assert len(engine.calls) == 1
    assert {r.quote_id for r in results} == {"q-1"}


async def test_engine_failures_propagate_and_are_not_cached() -> None:
    engine = FakeEngine()
    engine.fail = True
    quotes = CachedQuotes(engine, MemoryCache(), 10.0)
    with pytest.raises(BackendUnavailable):
        await quotes.quote()
    engine.fail = False
    assert (await quotes.quote()).quote_id == "q-2"


async def test_short_lived_quotes_are_not_cached() -> None:
    engine = FakeEngine(valid_for_s=0.1)
    clock = Clock()
    quotes = CachedQuotes(engine, MemoryCache(clock=clock.monotonic), 10.0, clock=clock.utc)
    await quotes.quote()
    await quotes.quote()
    assert len(engine.calls) == 2


def test_ttl_is_bounded() -> None:
    with pytest.raises(ValueError, match="TTL"):
        CachedQuotes(FakeEngine(), MemoryCache(), 0.5)
    with pytest.raises(ValueError, match="TTL"):
        CachedQuotes(FakeEngine(), MemoryCache(), MAX_TTL_S + 1)


class LeaseCache(MemoryCache):
    """The in-process cache, telling when an ``add`` (a lease) was refused."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = asyncio.Event()

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        added = await super().add(key, value, ttl_s)
        if not added:
            self.refused.set()
        return added


async def test_a_worker_waits_for_the_entry_of_the_worker_holding_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quote_cache, "LEASE_WAIT_S", 120.0)  # however slow the machine, the waiter waits
    shared = LeaseCache()
    engine = FakeEngine()
    engine.gate = asyncio.Event()
    clock = Clock()
    holder, waiter = (CachedQuotes(engine, shared, 10.0, clock=clock.utc) for _ in range(2))
    asking = asyncio.create_task(holder.quote(gpu_name="H100"))
    waiting = asyncio.create_task(waiter.quote(gpu_name="H100"))
    await asyncio.wait_for(shared.refused.wait(), 60)  # the waiter found the lease taken
    engine.gate.set()
    assert (await asyncio.wait_for(waiting, 60)) == await asking
    assert len(engine.calls) == 1
    assert (waiter.hits, waiter.misses, holder.misses) == (1, 0, 1)
    assert await shared.get("lease:" + QuoteQuery.of(gpu_name="H100").key()) is None  # released


async def test_a_failed_engine_call_releases_the_lease() -> None:
    shared = MemoryCache()
    engine = FakeEngine()
    engine.fail = True
    clock = Clock()
    worker = CachedQuotes(engine, shared, 10.0, clock=clock.utc)
    with pytest.raises(BackendUnavailable):
        await worker.quote(gpu_name="H100")
    assert await shared.get("lease:" + QuoteQuery.of(gpu_name="H100").key()) is None
    engine.fail = False
    other = CachedQuotes(engine, shared, 10.0, clock=clock.utc)
    assert (await other.quote(gpu_name="H100")).quote_id == "q-2"  # asked at once: nobody holds the lease


def test_the_cached_offer_has_every_field_of_the_offer() -> None:
    from pipeline.compute.catalog import Offer
    from pipeline.compute.quote_cache import CachedOffer

    assert set(CachedOffer.model_fields) == set(Offer.model_fields)
