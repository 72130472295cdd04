"""Live updates for the dashboard: one consumer of ``StateReader.updates()`` fanned out to SSE clients.

``GET /ui/events`` (server-sent events) authenticates like the API, with the token in ``?access_token=``
(EventSource cannot send headers) or an ``Authorization`` header. It sends:

* ``snapshot``: everything the token may see (tenants with quota, usage and status, recent anomalies and
  scaling events), on connect and again if the client fell too far behind;
* ``tenant``: the full view of one tenant after any tenant / quota / status / usage / compute-record change of
  it (changes that arrive together are coalesced into one view per tenant);
* ``anomaly``, ``scaling``, ``compute``: the ``LiveUpdate`` as ``{"kind", "tenant_id", "data"}``;
* ``token-expired``: then the stream ends (the client asks for a new token);
* a ``: keepalive`` comment every 15 s.

A tenant-scoped token only ever receives its own tenant's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from web.auth import Access, Authenticator, AuthError, AuthUnavailable, Principal, authorize, bearer_token, unauthorized
from web.errors import ApiError, Handler
from web.models import ProvisioningStatusResponse, QuotaResponse, TenantView
from web.state import LiveUpdate, StateReader

logger = logging.getLogger(__name__)

T = TypeVar("T")

KEEPALIVE_SECONDS = 15.0
SUBSCRIBER_QUEUE = 1000
RECENT_SCALING = 200
RECENT_ANOMALIES = 50
SNAPSHOT_MAX_TENANTS = 1000
SNAPSHOT_PAGE = 200
SNAPSHOT_CONCURRENCY = 16
#: LiveUpdate kinds that change what a tenant's row shows; the stream re-reads the tenant's view for them
#: (compute-records: an allocation started or ended, so the usage counts another machine or one fewer).
TENANT_KINDS = frozenset({"tenant", "quota", "status", "usage", "compute-records"})
#: Other spellings of the kinds (table names), mapped to the ones the stream sends.
KIND_ALIASES = {
    "tenants": "tenant",
    "quotas": "quota",
    "provisioning-status": "status",
    "provisioning_status": "status",
    "anomalies": "anomaly",
    "scaling-events": "scaling",
}


def normalize(update: LiveUpdate) -> LiveUpdate | None:
    """The update in the stream's vocabulary: table names become kinds; an anomaly-log change becomes its
    newest anomaly (None when the log has none)."""
    kind = KIND_ALIASES.get(update.kind, update.kind)
    data = update.data
    if kind == "anomaly" and isinstance(data.get("recent"), list):
        if not data["recent"] or not isinstance(data["recent"][0], dict):
            return None
        data = data["recent"][0]
    if kind == update.kind and data is update.data:
        return update
    return LiveUpdate(kind=kind, tenant_id=update.tenant_id, data=data)


class Subscriber:
    def __init__(self, visible: list[str] | None) -> None:
        self.visible = None if visible is None else frozenset(visible)
        self.queue: asyncio.Queue[LiveUpdate | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.overflowed = False

    def offer(self, update: LiveUpdate) -> None:
        if self.visible is not None and update.tenant_id not in self.visible:
            return
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.overflowed = True  # the stream sends a fresh snapshot instead of the lost updates

    def close(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class LiveHub:
    """Reads ``reader.updates()`` once and hands every update to each connected stream."""

    def __init__(self, reader: StateReader) -> None:
        self.reader = reader
        self.subscribers: set[Subscriber] = set()
        self.recent_scaling: deque[LiveUpdate] = deque(maxlen=RECENT_SCALING)
        self._task: asyncio.Task[None] | None = None

    async def on_startup(self, _app: web.Application) -> None:
        self.start()

    async def on_shutdown(self, _app: web.Application) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-updates")

    async def close(self) -> None:
        for subscriber in list(self.subscribers):
            subscriber.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, visible: list[str] | None) -> Subscriber:
        subscriber = Subscriber(visible)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def dispatch(self, raw: LiveUpdate) -> None:
        update = normalize(raw)
        if update is None:
            return
        if update.kind == "scaling":
            self.recent_scaling.appendleft(update)
        for subscriber in list(self.subscribers):
            subscriber.offer(update)

    async def _run(self) -> None:
        while True:
            try:
                async for update in self.reader.updates():
                    self.dispatch(update)
                logger.warning("the live update stream ended; resubscribing")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the live update stream failed; resubscribing in 1 s")
            await asyncio.sleep(1.0)


async def tenant_view(reader: StateReader, tenant_id: str) -> TenantView:
    tenant, quota, status, usage, held, costs = await asyncio.gather(
        reader.tenant(tenant_id),
        reader.quota(tenant_id),
        reader.provisioning_status(tenant_id),
        reader.usage(tenant_id),
        reader.compute_held(tenant_id),
        reader.compute_costs(tenant_id),
    )
    return TenantView(
        tenant_id=tenant_id,
        tenant=tenant,
        quota=QuotaResponse.of(quota, usage, held) if quota is not None else None,
        status=ProvisioningStatusResponse.of(tenant_id, status),
        costs=costs,
    )


def _update_json(update: LiveUpdate) -> dict[str, Any]:
    return {"kind": update.kind, "tenant_id": update.tenant_id, "data": update.data}


async def snapshot(reader: StateReader, hub: LiveHub, principal: Principal) -> dict[str, Any]:
    visible = principal.visible_tenants()
    tenant_ids: list[str] = []
    total = 0
    offset = 0
    while len(tenant_ids) < SNAPSHOT_MAX_TENANTS:
        page = await reader.tenants(offset, SNAPSHOT_PAGE, visible)
        total = page.total
        tenant_ids.extend(t.tenant_id for t in page.items)
        offset += SNAPSHOT_PAGE
        if not page.items or offset >= page.total:
            break
    tenant_ids = tenant_ids[:SNAPSHOT_MAX_TENANTS]
    limit = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)  # reads of remote tenants go to their owner worker

    async def bounded(call: Awaitable[T]) -> T:
        async with limit:
            return await call

    views = await asyncio.gather(*(bounded(tenant_view(reader, tid)) for tid in tenant_ids))
    logs = await asyncio.gather(*(bounded(reader.anomalies(tid)) for tid in tenant_ids))
    anomalies: list[dict[str, Any]] = []
    for tid, log in zip(tenant_ids, logs, strict=True):
        if log is not None:
            anomalies.extend(
                {"kind": "anomaly", "tenant_id": tid, "data": a.model_dump(mode="json")}
                for a in log.recent[:RECENT_ANOMALIES]
            )
    anomalies.sort(key=lambda a: str(a["data"].get("occurred_at", "")), reverse=True)
    scaling = [
        _update_json(u) for u in hub.recent_scaling if principal.may_see(u.tenant_id)
    ]
    return {
        "principal": {"sub": principal.sub, "tenant_id": principal.tenant_id, "roles": sorted(principal.roles)},
        "tenants": [v.model_dump(mode="json") for v in views],
        "total": total,
        "truncated": total > len(tenant_ids),
        "anomalies": anomalies[:RECENT_ANOMALIES],
        "scaling": scaling[:RECENT_ANOMALIES],
        "server_time": datetime.now(UTC).isoformat(),
    }


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    payload = json.dumps(data, separators=(",", ":"), default=str)
    await response.write(f"event: {event}\ndata: {payload}\n\n".encode())


async def _principal(request: web.Request, auth: Authenticator) -> Principal:
    try:
        token = request.query.get("access_token") or bearer_token(request.headers.get("Authorization"))
        principal = await auth.authenticate(token)
    except AuthError as exc:
        raise unauthorized(str(exc)) from None
    except AuthUnavailable as exc:
        raise ApiError(503, "auth-unavailable", str(exc), headers={"Retry-After": "5"}) from None
    authorize(principal, Access.READ, None)
    return principal


def events_handler(reader: StateReader, hub: LiveHub, auth: Authenticator) -> Handler:
    async def events(request: web.Request) -> web.StreamResponse:
        principal = await _principal(request, auth)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-store",
                "X-Accel-Buffering": "no",
            }
        )
        subscriber = hub.subscribe(principal.visible_tenants())
        try:
            await response.prepare(request)
            await _send(response, "snapshot", await snapshot(reader, hub, principal))
            await _stream(response, reader, hub, principal, subscriber)
        except ConnectionError:
            logger.debug("a dashboard stream client went away")
        except Exception:
            # the response has started: it cannot become an error response any more; the client reconnects
            logger.exception("the dashboard stream of %s failed", principal.sub)
        finally:
            hub.unsubscribe(subscriber)
        return response

    return events


async def _stream(
    response: web.StreamResponse, reader: StateReader, hub: LiveHub, principal: Principal, subscriber: Subscriber
) -> None:
    while True:
        remaining = (principal.expires_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            await _send(response, "token-expired", {"message": "the access token has expired"})
            return
        try:
            first = await asyncio.wait_for(subscriber.queue.get(), timeout=min(KEEPALIVE_SECONDS, remaining))
        except TimeoutError:
            await response.write(b": keepalive\n\n")
            continue
        batch = [first]
        while not subscriber.queue.empty():
            batch.append(subscriber.queue.get_nowait())
        if any(update is None for update in batch):
            return  # the server is shutting down
        if subscriber.overflowed:
            subscriber.overflowed = False
            await _send(response, "snapshot", await snapshot(reader, hub, principal))
            continue
        dirty: dict[str, None] = {}
        for update in batch:
            assert update is not None
            if update.kind in TENANT_KINDS:
                dirty[update.tenant_id] = None
            else:
                await _send(response, update.kind, _update_json(update))
        for tenant_id in dirty:
            view = await tenant_view(reader, tenant_id)
            await _send(response, "tenant", view.model_dump(mode="json"))


#: Where the worker's root application keeps its :class:`LiveHub` (routes that publish updates find it there).
HUB_KEY = web.AppKey("live_hub", LiveHub)
