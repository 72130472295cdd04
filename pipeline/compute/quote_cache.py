"""The derivatives engine's quotes through the workers' shared cache (:mod:`pipeline.shared_cache`).

:class:`CachedQuotes` answers ``quote(...)`` like :class:`~pipeline.compute.engine_client.DerivativesEngineClient`
does (it is a drop-in :class:`QuoteSource`): it looks the normalized query up in the shared cache, and on a miss
asks the engine and stores the answer for ``ttl_s`` (never past the quote's own ``valid_until``). Every worker
asking the same question within the TTL gets the same quote (the same ``quote_id``), and the engine is asked
once: after a miss a worker takes the key's lease (an ``add`` to the cache) before asking the engine, and the
workers that miss the same key meanwhile wait briefly for its entry instead of asking too (an entry expires on
every worker at the same moment). Concurrent misses of one key on one worker share one engine call, and a worker
keeps the quotes it read or wrote at hand until they stop counting (a *near* hit: no round trip to Ignite, and
the quote is still the one every worker gets for that key).

Cache entries are untrusted input: an entry is read back only when it is at most
:data:`~pipeline.shared_cache.MAX_VALUE_CHARS` long, parses as the :class:`CachedQuote` envelope (schema-checked,
offers bounded in number and in their strings, finite non-negative numbers), names the key it was looked up
under, has not expired and does not claim to live longer than the longest TTL. Anything else is counted
(``provisioning_shared_cache_lookups_total{result="invalid"}``), dropped from the cache and treated as a miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pipeline.compute.catalog import Offer
from pipeline.compute.engine_client import Quote
from pipeline.compute.request import normalize_name
from pipeline.metrics import SHARED_CACHE_LOOKUPS
from pipeline.shared_cache import MAX_VALUE_CHARS, SharedCache

logger = logging.getLogger(__name__)

#: The metric label of this cache.
CACHE_LABEL = "compute-quotes"
#: Bounds of the TTL setting (``SHARED_CACHE_QUOTE_TTL_SECONDS``); an entry claiming a longer life is invalid.
MIN_TTL_S = 1.0
MAX_TTL_S = 600.0
#: Most offers one cached quote may hold (the packaged catalogs quote 532), and the longest string of an offer.
MAX_OFFERS = 20_000
MAX_FILTER_ITEMS = 64
#: Quotes a worker keeps at hand (the distinct queries of the last TTL; the oldest go first).
NEAR_ENTRIES = 256
#: The lease a worker takes before asking the engine after a miss: how long it lives at most (a worker that dies
#: holding it), how long the others wait for the entry instead, and how often they look.
LEASE_S = 5.0
LEASE_WAIT_S = 2.0
LEASE_POLL_S = 0.05
_LEASE_PREFIX = "lease:"
_KEY_PREFIX = "quote:v1:"

BoundedName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Text = Annotated[str, StringConstraints(max_length=256)]


class QuoteSource(Protocol):
    """Where quotes come from: the engine client, or :class:`CachedQuotes` in front of it."""

    async def quote(
        self,
        *,
        tenant_id: str | None = None,
        gpu_name: str | None = None,
        providers: list[str] | None = None,
        regions: list[str] | None = None,
    ) -> Quote: ...


class QuoteQuery(BaseModel):
    """A quote's filters in one canonical form: names case-folded and trimmed, lists sorted without duplicates,
    an empty list the same as none (the engine treats both as "no filter", and filters are only hints: the
    optimizer re-checks every offer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: BoundedName | None = None
    gpu_name: BoundedName | None = None
    providers: tuple[BoundedName, ...] | None = Field(default=None, max_length=MAX_FILTER_ITEMS)
    regions: tuple[BoundedName, ...] | None = Field(default=None, max_length=MAX_FILTER_ITEMS)

    @classmethod
    def of(
        cls,
        *,
        tenant_id: str | None = None,
        gpu_name: str | None = None,
        providers: list[str] | tuple[str, ...] | None = None,
        regions: list[str] | tuple[str, ...] | None = None,
    ) -> QuoteQuery:
        def names(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
            cleaned = sorted({normalize_name(v) for v in values or () if v.strip()})
            return tuple(cleaned) or None

        gpu = normalize_name(gpu_name) if gpu_name and gpu_name.strip() else None
        tenant = tenant_id.strip() if tenant_id and tenant_id.strip() else None  # tenant ids are case-sensitive
        return cls(tenant_id=tenant, gpu_name=gpu, providers=names(providers), regions=names(regions))

    def key(self, engine: str = "") -> str:
        """The cache key: a digest of the canonical JSON of the query and ``engine`` (which engine answers it: its
        base URL, so that workers of other engines sharing the Ignite cluster never share quotes; bounded length,
        no user text in the key)."""
        body = {"engine": engine, **self.model_dump(mode="json")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return _KEY_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


class CachedOffer(BaseModel):
    """An offer as stored in the cache: :class:`~pipeline.compute.catalog.Offer` with bounded strings and
    finite numbers (the catalog model trusts its own CSV loader; this one reads what any client wrote)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    offer_id: _Text
    provider: BoundedName
    region: BoundedName
    zone: _Text | None = None
    instance_type: BoundedName
    gpu_name: _Text | None = None
    gpu_count: int = Field(default=0, ge=0, le=1024)
    gpu_memory_mib: int | None = Field(default=None, ge=0, le=10**8)
    vcpus: float = Field(ge=0, le=100_000)
    memory_gib: float = Field(ge=0, le=10**8)
    max_storage_gib: float | None = Field(default=None, ge=0, le=10**9)
    storage_price_per_gib_hour: float | None = Field(default=None, ge=0, le=1.0)
    capacity_class: Literal["on_demand", "spot"] = "on_demand"
    price_per_hour: float = Field(ge=0, le=10**7)
    source: Literal["engine"] = "engine"
    available: int | None = Field(default=None, ge=-(10**9), le=10**9)
    capacity: int | None = Field(default=None, ge=0, le=10**9)


class CachedQuote(BaseModel):
    """The cache entry: which key it was written under, when it stops counting, and the quote."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    v: Literal[1] = 1
    key: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    expires_at: AwareDatetime
    quote_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    valid_until: AwareDatetime
    offers: list[CachedOffer] = Field(max_length=MAX_OFFERS)

    @classmethod
    def of(cls, key: str, quote: Quote, expires_at: datetime) -> CachedQuote:
        return cls(
            key=key, expires_at=expires_at, quote_id=quote.quote_id, valid_until=quote.valid_until,
            offers=[CachedOffer.model_validate(o.model_dump()) for o in quote.offers],
        )

    def quote(self) -> Quote:
        # every CachedOffer is a valid Offer (same fields, stricter bounds): no second validation
        return Quote.model_construct(
            quote_id=self.quote_id, valid_until=self.valid_until,
            offers=[Offer.model_construct(**dict(o)) for o in self.offers],
        )


class InvalidEntry(ValueError):
    """A cache entry that must not be used (the message says why; never its content)."""


def read_entry(raw: str, key: str, now: datetime, max_ttl_s: float = MAX_TTL_S) -> Quote | None:
    """The quote of cache entry ``raw`` looked up under ``key`` at ``now``: ``None`` when it expired (a plain
    miss); :class:`InvalidEntry` when it is not a well-formed entry of this key or claims to live too long."""
    found = read_entry_until(raw, key, now, max_ttl_s)
    return found[1] if found is not None else None


def read_entry_until(
    raw: str, key: str, now: datetime, max_ttl_s: float = MAX_TTL_S
) -> tuple[datetime, Quote] | None:
    """:func:`read_entry`, with the time the entry stops counting (its ``expires_at`` or the quote's
    ``valid_until``, whichever comes first)."""
    if len(raw) > MAX_VALUE_CHARS:
        raise InvalidEntry(f"entry of {len(raw)} characters")
    try:
        entry = CachedQuote.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEntry(f"malformed entry: {exc.error_count()} error(s)") from None
    if entry.key != key:
        raise InvalidEntry("entry written under another key")
    if entry.expires_at - now > timedelta(seconds=max_ttl_s):
        raise InvalidEntry("entry claims to live longer than the longest TTL")
    until = min(entry.expires_at, entry.valid_until)
    if until <= now:
        return None
    return until, entry.quote()


def write_entry(key: str, quote: Quote, now: datetime, ttl_s: float) -> tuple[str, float] | None:
    """The entry to store for ``quote`` and its TTL in seconds (at most ``ttl_s``, never past the quote's
    ``valid_until``); ``None`` when the quote is too short-lived (or too large) to be worth caching."""
    life = min(ttl_s, (quote.valid_until - now).total_seconds())
    if not math.isfinite(life) or life < MIN_TTL_S / 2:
        return None
    try:
        entry = CachedQuote.of(key, quote, now + timedelta(seconds=life))
    except ValidationError:
        logger.warning("engine quote %s is outside the cache's bounds: not cached", quote.quote_id)
        return None
    raw = entry.model_dump_json()
    if len(raw) > MAX_VALUE_CHARS:
        return None
    return raw, life


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CachedQuotes:
    """Quotes of ``engine`` through ``cache`` (see the module docstring). ``hits``/``misses``/``invalid`` count
    this worker's lookups (the benchmark reads them; the metric counts them too)."""

    def __init__(
        self,
        engine: QuoteSource,
        cache: SharedCache,
        ttl_s: float,
        *,
        namespace: str = "",
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"quote TTL must be in [{MIN_TTL_S}, {MAX_TTL_S}] s, got {ttl_s}")
        self.engine = engine
        self.namespace = namespace
        """Part of every key: the engine's base URL (see :meth:`QuoteQuery.key`)."""
        self.cache = cache
        self.ttl_s = ttl_s
        self.clock = clock
        self.hits = self.near_hits = self.misses = self.invalid = 0
        self._pending: dict[str, asyncio.Future[Quote]] = {}
        #: Entries this worker read or wrote, until they stop counting: a key asked again is answered here
        #: without a round trip (the quote is the one every worker gets for the key until then).
        self._near: OrderedDict[str, tuple[datetime, Quote]] = OrderedDict()

    async def quote(
        self,
        *,
        tenant_id: str | None = None,
        gpu_name: str | None = None,
        providers: list[str] | None = None,
        regions: list[str] | None = None,
    ) -> Quote:
        try:
            query = QuoteQuery.of(tenant_id=tenant_id, gpu_name=gpu_name, providers=providers, regions=regions)
        except ValidationError:
            # filters beyond the key's bounds (very many or very long names): ask without them. Filters are hints
            # (the optimizer re-checks every offer), so the unfiltered quote is a superset that serves as well.
            query = QuoteQuery.of(tenant_id=tenant_id, gpu_name=gpu_name)
        return await self.quote_for(query)

    async def quote_for(self, query: QuoteQuery) -> Quote:
        key = query.key(self.namespace)
        near = self._near.get(key)
        if near is not None:
            if near[0] > self.clock():
                self._count("near_hit")
                return near[1]
            del self._near[key]
        cached = await self._lookup(key)
        if cached is not None:
            return cached
        pending = self._pending.get(key)
        if pending is not None:  # another request of this worker is asking the engine the same question
            self._count("miss")
            return await asyncio.shield(pending)
        future: asyncio.Future[Quote] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            quote = await self._from_peer_or_engine(query, key)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                future.set_exception(exc)
                future.exception()  # retrieved: a failure nobody else awaited is not "never retrieved"
            else:
                future.cancel()
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(quote)
        return quote

    async def _from_peer_or_engine(self, query: QuoteQuery, key: str) -> Quote:
        """After a miss: unless another worker holds the key's lease (it is asking the engine right now, so wait
        up to ``LEASE_WAIT_S`` for its entry), take the lease, ask the engine and store the answer. An entry
        expires on every worker at once; the lease keeps the workers from all asking the engine at that moment."""
        lease = _LEASE_PREFIX + key
        held = await self.cache.add(lease, "1", LEASE_S)
        if not held:
            found = await self._wait_for_entry(key)
            if found is not None:
                return found
        self._count("miss")
        try:
            quote = await self.engine.quote(
                tenant_id=query.tenant_id, gpu_name=query.gpu_name,
                providers=list(query.providers) if query.providers is not None else None,
                regions=list(query.regions) if query.regions is not None else None,
            )
            now = self.clock()
            written = write_entry(key, quote, now, self.ttl_s)
            if written is not None:
                self._remember(key, now + timedelta(seconds=written[1]), quote)
                await self.cache.put(key, written[0], written[1])
        finally:
            if held:  # the entry is there (or the engine failed): nobody waits any more
                await self.cache.delete(lease)
        return quote

    async def _wait_for_entry(self, key: str) -> Quote | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEASE_WAIT_S
        while loop.time() < deadline:
            await asyncio.sleep(LEASE_POLL_S)
            raw = await self.cache.get(key)
            if raw is None:
                continue
            try:
                found = read_entry_until(raw, key, self.clock())
            except InvalidEntry:
                return None  # the engine will answer (and the entry is replaced)
            if found is not None:
                self._count("hit")
                self._remember(key, *found)
                return found[1]
        return None

    def _remember(self, key: str, until: datetime, quote: Quote) -> None:
        self._near.pop(key, None)
        self._near[key] = (until, quote)
        while len(self._near) > NEAR_ENTRIES:
            self._near.popitem(last=False)

    async def _lookup(self, key: str) -> Quote | None:
        raw = await self.cache.get(key)
        if raw is None:
            return None
        try:
            found = read_entry_until(raw, key, self.clock())
        except InvalidEntry as exc:
            logger.warning("shared cache %s: dropped an invalid entry (%s)", CACHE_LABEL, exc)
            self._count("invalid")
            await self.cache.delete(key)
            return None
        if found is None:  # expired by its own clock (Ignite's expiry is a little later or the clocks differ)
            return None
        self._count("hit")
        self._remember(key, *found)
        return found[1]

    def _count(self, result: Literal["hit", "near_hit", "miss", "invalid"]) -> None:
        SHARED_CACHE_LOOKUPS.labels(CACHE_LABEL, result).inc()
        if result == "hit":
            self.hits += 1
        elif result == "near_hit":
            self.near_hits += 1
        elif result == "miss":
            self.misses += 1
        else:
            self.invalid += 1
