"""STAND-IN derivatives engine: a local fake of the platform's engine, for tests and benchmarks only.

The real derivatives engine cannot run here. This aiohttp app implements the same ``v1`` contract as
:mod:`pipeline.compute.engine_client` (documented in ``docs/compute.md``), serves quotes from the real
SkyPilot catalogs (wholesale price = catalog price x ``wholesale_factor``), keeps track of allocated
capacity per pool (provider, region, instance type; spot and on-demand share a pool), and can be told to
misbehave:

* :meth:`StandinEngine.fail_next` — the next ``k`` allocations fail with ``refused`` / ``capacity`` /
  ``error`` (HTTP 500) / ``timeout`` (the allocation IS made, then the answer hangs for ``hang_s``: the
  worst case for leaks) / ``provision_fail`` (allocated, then the machine goes to ``failed``);
* :meth:`StandinEngine.set_capacity` / :meth:`StandinEngine.exhaust` — run a provider/region out of capacity.

The same controls are reachable over HTTP under ``/_standin/`` (for a stand-in started as a process):
``POST /_standin/faults {"kind", "count", "hang_s"}``, ``POST /_standin/capacity {"provider", "region",
"instance_type", "capacity"}``, ``POST /_standin/reset``, ``GET /_standin/state``.

Run: ``python -m devstack.derivatives_standin --port 8092 [--catalog-dir DIR]`` (default: the packaged
copies of the real catalogs, ``pipeline/compute/catalogs``).
In-process (tests): ``async with running_standin(offers) as standin: standin.url ...``.
It is NOT the derivatives engine: no auth, no persistence, no billing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from pipeline.compute.catalog import PACKAGED_CATALOG_DIR, Offer, load_catalogs, real_catalog_paths
from pipeline.compute.engine_client import offer_to_wire

logger = logging.getLogger(__name__)

FaultKind = Literal["refused", "capacity", "error", "timeout", "provision_fail"]
FAULT_KINDS: tuple[str, ...] = ("refused", "capacity", "error", "timeout", "provision_fail")

PoolKey = tuple[str, str, str]


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int
    hang_s: float


@dataclass
class _Allocation:
    allocation_id: str
    client_token: str
    offer_id: str
    pool: PoolKey
    tenant_id: str
    created_at: datetime
    created_mono: float
    state: str = "provisioning"
    fail_provisioning: bool = False

    def view(self, provisioning_s: float) -> dict[str, Any]:
        if self.state == "provisioning" and time.monotonic() - self.created_mono >= provisioning_s:
            self.state = "failed" if self.fail_provisioning else "running"
        return {
            "allocation_id": self.allocation_id,
            "client_token": self.client_token,
            "offer_id": self.offer_id,
            "state": self.state,
            "host": f"{self.allocation_id}.{self.pool[1]}.standin.invalid",
            "ssh_port": 22,
            "message": "machine failed during provisioning (stand-in fault)" if self.state == "failed" else None,
            "created_at": self.created_at.isoformat(),
        }


@dataclass
class StandinEngine:
    """State and behaviour of the stand-in (see the module docstring)."""

    offers: Sequence[Offer]
    default_capacity: int = 4
    wholesale_factor: float = 1.0
    #: USD per GiB of attached storage and hour, sent with every offer that does not carry its own.
    storage_price_per_gib_hour: float | None = None
    provisioning_s: float = 0.0
    quote_ttl_s: float = 300.0
    _by_id: dict[str, Offer] = field(init=False)
    _capacity: dict[PoolKey, int] = field(init=False, default_factory=dict)
    _allocations: dict[str, _Allocation] = field(init=False, default_factory=dict)
    _tokens: dict[str, str] = field(init=False, default_factory=dict)
    _tombstones: set[str] = field(init=False, default_factory=set)
    _faults: list[_Fault] = field(init=False, default_factory=list)
    _ids: itertools.count[int] = field(init=False, default_factory=lambda: itertools.count(1))
    _closing: asyncio.Event | None = field(init=False, default=None)
    _allocated: asyncio.Event | None = field(init=False, default=None)
    allocate_calls: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._by_id = {o.offer_id: o for o in self.offers}

    # ----- controls (tests call these directly; HTTP clients use /_standin/) -----

    def fail_next(self, count: int, kind: FaultKind = "refused", *, hang_s: float = 5.0) -> None:
        """The next ``count`` allocate calls fail with ``kind`` (queued after earlier faults)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if count > 0:
            self._faults.append(_Fault(kind, count, hang_s))

    def set_capacity(
        self, provider: str, region: str | None = None, instance_type: str | None = None, capacity: int = 0
    ) -> int:
        """Set the capacity (instances) of every matching pool; returns how many pools matched."""
        matched = 0
        for pool in {self._pool(o) for o in self.offers}:
            if pool[0] == provider and region in (None, pool[1]) and instance_type in (None, pool[2]):
                self._capacity[pool] = capacity
                matched += 1
        return matched

    def exhaust(self, provider: str, region: str | None = None) -> int:
        """Run ``provider`` (optionally only ``region``) out of capacity."""
        return self.set_capacity(provider, region, None, 0)

    def reset(self) -> None:
        """Forget faults and capacity overrides (allocations are kept)."""
        self._faults.clear()
        self._capacity.clear()

    def active_allocations(self) -> list[dict[str, Any]]:
        """Allocations not released (provisioning, running or failed): what is being paid for."""
        return [a.view(self.provisioning_s) for a in self._allocations.values() if a.state != "released"]

    async def wait_for_allocation(self) -> None:
        """Return once an allocation exists (tests: "the engine has it and is hanging now")."""
        if self._allocated is None:
            raise RuntimeError("the stand-in app is not started")
        await self._allocated.wait()

    def allocated_in(self, pool: PoolKey) -> int:
        return sum(1 for a in self._allocations.values() if a.pool == pool and a.state != "released")

    def capacity_of(self, pool: PoolKey) -> int:
        return self._capacity.get(pool, self.default_capacity)

    # ----- internals -----

    @staticmethod
    def _pool(offer: Offer) -> PoolKey:
        return (offer.provider, offer.region if not offer.zone else f"{offer.region}/{offer.zone}",
                offer.instance_type)

    def _next_fault(self) -> _Fault | None:
        while self._faults:
            fault = self._faults[0]
            if fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.pop(0)
                return fault
            self._faults.pop(0)
        return None

    def _quote_offer(self, offer: Offer) -> dict[str, Any]:
        pool = self._pool(offer)
        capacity = self.capacity_of(pool)
        wire = offer_to_wire(offer)
        wire["wholesale_price_per_hour"] = round(offer.price_per_hour * self.wholesale_factor, 6)
        if wire.get("storage_price_per_gib_hour") is None:
            wire["storage_price_per_gib_hour"] = self.storage_price_per_gib_hour
        wire["capacity"] = capacity
        wire["available"] = max(capacity - self.allocated_in(pool), 0)
        return wire

    # ----- HTTP handlers -----

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/v1/health", self._health),
                web.post("/v1/quotes", self._quotes),
                web.post("/v1/allocations", self._allocate),
                web.post("/v1/allocations/release", self._release_by_token),
                web.get("/v1/allocations/{allocation_id}", self._status),
                web.delete("/v1/allocations/{allocation_id}", self._release),
                web.get("/v1/capacity", self._capacity_view),
                web.post("/_standin/faults", self._ctl_faults),
                web.post("/_standin/capacity", self._ctl_capacity),
                web.post("/_standin/reset", self._ctl_reset),
                web.get("/_standin/state", self._ctl_state),
            ]
        )
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._closing = asyncio.Event()
        self._allocated = asyncio.Event()

    async def _on_shutdown(self, _app: web.Application) -> None:
        if self._closing is not None:
            self._closing.set()

    @staticmethod
    def _err(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": code, "message": message}, status=status)

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "invalid", "message": "JSON object expected"}),
                content_type="application/json",
            )
        return body

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "standin": True})

    async def _quotes(self, request: web.Request) -> web.Response:
        body = await self._json(request) if request.can_read_body else {}
        gpu = (body.get("gpu_name") or "").casefold() or None
        providers = {p.casefold() for p in body.get("providers") or []}
        regions = {r.casefold() for r in body.get("regions") or []}
        offers = [
            self._quote_offer(o)
            for o in self.offers
            if (gpu is None or (o.gpu_name or "").casefold() == gpu)
            and (not providers or o.provider.casefold() in providers)
            and (not regions or o.region.casefold() in regions)
        ]
        now = datetime.now(UTC)
        return web.json_response(
            {
                "quote_id": f"q-{next(self._ids)}",
                "valid_until": (now + timedelta(seconds=self.quote_ttl_s)).isoformat(),
                "offers": offers,
            }
        )

    async def _allocate(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        self.allocate_calls += 1
        offer_id = body.get("offer_id")
        token = body.get("client_token")
        if not isinstance(offer_id, str) or not isinstance(token, str) or not token:
            return self._err(400, "invalid", "offer_id and client_token are required")
        if token in self._tombstones:
            return self._err(409, "token_released", "client token was released; use a new token")
        existing = self._tokens.get(token)
        if existing is not None:
            return web.json_response(self._allocations[existing].view(self.provisioning_s), status=200)
        offer = self._by_id.get(offer_id)
        if offer is None:
            return self._err(404, "unknown_offer", f"unknown offer {offer_id}")
        fault = self._next_fault()
        if fault is not None and fault.kind == "refused":
            return self._err(409, "refused", "allocation refused by the provider (stand-in fault)")
        if fault is not None and fault.kind == "capacity":
            return self._err(503, "capacity", "no capacity (stand-in fault)")
        if fault is not None and fault.kind == "error":
            return self._err(500, "internal", "internal error (stand-in fault)")
        pool = self._pool(offer)
        if self.allocated_in(pool) >= self.capacity_of(pool):
            return self._err(503, "capacity", f"no capacity left in {pool[0]}/{pool[1]} {pool[2]}")
        allocation = _Allocation(
            allocation_id=f"alloc-{next(self._ids):06d}",
            client_token=token,
            offer_id=offer_id,
            pool=pool,
            tenant_id=str(body.get("tenant_id") or ""),
            created_at=datetime.now(UTC),
            created_mono=time.monotonic(),
            fail_provisioning=fault is not None and fault.kind == "provision_fail",
        )
        self._allocations[allocation.allocation_id] = allocation
        self._tokens[token] = allocation.allocation_id
        logger.info("stand-in allocated %s on %s", allocation.allocation_id, offer_id)
        if self._allocated is not None:
            self._allocated.set()
        if fault is not None and fault.kind == "timeout":
            if self._closing is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), fault.hang_s)
            else:  # pragma: no cover - app always starts through on_startup
                await asyncio.sleep(fault.hang_s)
        return web.json_response(allocation.view(self.provisioning_s), status=201)

    async def _status(self, request: web.Request) -> web.Response:
        allocation = self._allocations.get(request.match_info["allocation_id"])
        if allocation is None:
            return self._err(404, "not_found", "unknown allocation")
        return web.json_response(allocation.view(self.provisioning_s))

    def _free(self, allocation: _Allocation) -> None:
        if allocation.state != "released":
            allocation.state = "released"
            logger.info("stand-in released %s", allocation.allocation_id)

    async def _release(self, request: web.Request) -> web.Response:
        allocation = self._allocations.get(request.match_info["allocation_id"])
        if allocation is None:
            return self._err(404, "not_found", "unknown allocation")
        self._free(allocation)
        return web.json_response({"allocation_id": allocation.allocation_id, "state": "released"})

    async def _release_by_token(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        token = body.get("client_token")
        if not isinstance(token, str) or not token:
            return self._err(400, "invalid", "client_token is required")
        self._tombstones.add(token)
        released = []
        allocation_id = self._tokens.get(token)
        if allocation_id is not None and self._allocations[allocation_id].state != "released":
            self._free(self._allocations[allocation_id])
            released.append(allocation_id)
        return web.json_response({"client_token": token, "released": released})

    async def _capacity_view(self, _request: web.Request) -> web.Response:
        pools = sorted({self._pool(o) for o in self.offers})
        out = []
        for pool in pools:
            capacity, allocated = self.capacity_of(pool), self.allocated_in(pool)
            out.append(
                {
                    "provider": pool[0],
                    "region": pool[1],
                    "instance_type": pool[2],
                    "capacity": capacity,
                    "allocated": allocated,
                    "available": max(capacity - allocated, 0),
                }
            )
        return web.json_response({"pools": out})

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            self.fail_next(int(body.get("count", 1)), body.get("kind", "refused"), hang_s=float(body.get("hang_s", 5)))
        except (TypeError, ValueError) as exc:
            return self._err(400, "invalid", str(exc))
        return web.json_response({"queued": [f.__dict__ for f in self._faults]})

    async def _ctl_capacity(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        matched = self.set_capacity(
            str(body.get("provider", "")), body.get("region"), body.get("instance_type"), int(body.get("capacity", 0))
        )
        return web.json_response({"pools": matched})

    async def _ctl_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _ctl_state(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"active": self.active_allocations(), "allocate_calls": self.allocate_calls, "standin": True}
        )


@dataclass
class RunningStandin:
    """A started stand-in: its state object and base URL."""

    engine: StandinEngine
    url: str
    runner: web.AppRunner


@contextlib.asynccontextmanager
async def running_standin(
    offers: Sequence[Offer], *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[RunningStandin]:
    """Start the stand-in in this event loop (``port=0``: an ephemeral port); stop it on exit."""
    engine = StandinEngine(offers, **options)
    runner = web.AppRunner(engine.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    try:
        yield RunningStandin(engine, f"http://{host}:{bound[1]}", runner)
    finally:
        await runner.cleanup()


async def _serve(args: argparse.Namespace) -> None:
    offers = load_catalogs(real_catalog_paths(args.catalog_dir) + [Path(p) for p in args.extra_catalog])
    async with running_standin(
        offers,
        host=args.host,
        port=args.port,
        default_capacity=args.capacity,
        wholesale_factor=args.wholesale_factor,
        storage_price_per_gib_hour=args.storage_price_per_gib_hour,
        provisioning_s=args.provisioning_s,
    ) as standin:
        sys.stdout.write(f"STAND-IN derivatives engine on {standin.url} ({len(offers)} offers)\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (compose.yaml's service passes ``--host 0.0.0.0``; on the host it stays on loopback)."""
    parser = argparse.ArgumentParser(description="STAND-IN derivatives engine (tests/benchmarks only)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 inside a container only")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--catalog-dir", type=Path, default=PACKAGED_CATALOG_DIR)
    parser.add_argument("--extra-catalog", action="append", default=[], help="a user CSV in the same format")
    parser.add_argument("--capacity", type=int, default=4, help="instances per pool")
    parser.add_argument("--wholesale-factor", type=float, default=1.0)
    parser.add_argument("--provisioning-s", type=float, default=0.0)
    parser.add_argument("--storage-price-per-gib-hour", type=float, default=None,
                        help="price attached storage (USD per GiB-hour); unpriced by default")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
