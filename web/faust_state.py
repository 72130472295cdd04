"""The worker's StateReader and CommandGateway: Faust tables read locally or on the owning worker.

Reads of one tenant are routed to the worker that owns the tenant's partition (the same partition in
every per-tenant table, since all inputs are keyed by tenant id): served from the local table when that
is this worker, else fetched from the owner's internal state endpoint. The tenant list is gathered from
every worker of the group. Routing keeps reads fresh (no second copy of the state to lag behind) and
costs one hop on a miss.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import faust
from aiohttp import web as aioweb
from pydantic import BaseModel
from yarl import URL

from pipeline.compute.costs import TenantCosts
from pipeline.compute.lifecycle import ComputeHeld, held_by
from pipeline.compute.runtime import ComputeRuntime
from pipeline.config import Settings
from pipeline.contract.topics import AUDIT_EVENTS, QUOTA_UPDATES, TENANT_CREATED, TENANT_DELETED
from pipeline.events.models import AuditEvent, QuotaResource, QuotaUpdateRequested, TenantCreated, TenantDeleted
from pipeline.executor import dry_run_plan
from pipeline.provisioners.base import Provisioner
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.logic import tenant_users
from pipeline.tenants.models import AnomalyLog, ProvisioningStatus, QuotaRecord, TenantRecord, TenantUsers, UserRecord
from pipeline.tenants.tiers import quota_for_tier
from pipeline.typed_table import TypedTable
from pipeline.usage import TenantUtilization, UsageRecord
from tables import Tables
from web.api import Planner
from web.peer_client import PeerClient, PeerReply, PeerUnavailable, owner_unavailable
from web.peers import peer_headers, peer_secret, require_peer
from web.routing import owner_of
from web.state import LiveUpdate, Page

logger = logging.getLogger(__name__)

INTERNAL_PREFIX = "/internal/v1/state"
#: Sends one record (a pydantic model) to a topic, keyed, and waits until Kafka acknowledged it.
Send = Callable[[str, str, BaseModel], Awaitable[None]]


class Readable(Protocol):
    @property
    def model(self) -> type[BaseModel]: ...

    def get(self, key: str) -> Any: ...


class ComputeHeldView:
    """Read-only view for the API and the dashboard: what a tenant's compute allocations hold, from the compute
    runtime of this worker (the owner of the tenant's compute records, co-partitioned with its other tables)."""

    model = ComputeHeld

    def __init__(self, runtime: Callable[[], ComputeRuntime]) -> None:
        self.runtime = runtime

    def get(self, tenant_id: str) -> ComputeHeld:
        return held_by(self.runtime().holding(), tenant_id)


class TenantUsersView:
    """The users of a tenant, by tenant id: computed from this worker's users table (the owner's)."""

    model = TenantUsers

    def __init__(self, users: TypedTable[UserRecord]) -> None:
        self.users = users

    def get(self, tenant_id: str) -> TenantUsers:
        return tenant_users(self.users, tenant_id)


def watched_tables(tables: Tables) -> dict[str, TypedTable[Any]]:
    """The tables the dashboard follows, by the name peers read them under."""
    return {
        "tenants": tables.tenants,
        "quotas": tables.quotas,
        "provisioning-status": tables.provisioning_status,
        "usage": tables.usage,
        "anomalies": tables.anomalies,
    }


def readable(tables: Tables, compute_runtime: Callable[[], ComputeRuntime]) -> dict[str, Readable]:
    """What peers may read from this worker by tenant id: the tables, and views computed from them."""
    return {**watched_tables(tables), "utilization": tables.recent_utilization(),
            "compute-held": ComputeHeldView(compute_runtime), "tenant-users": TenantUsersView(tables.users)}


def owner_of_tenant(app: Any, tenant_created: faust.TopicT, tenant_id: str) -> URL | None:
    """URL of the worker owning ``tenant_id`` (by the tenant-created topic), or None when that is this worker."""
    return owner_of(app, tenant_id, tenant_created)


class FaustStateReader:
    """Reads of one tenant served locally or by its owner (``owner``: None when that is this worker)."""

    def __init__(
        self,
        settings: Settings,
        readable: Mapping[str, Readable],
        tenants: TypedTable[TenantRecord],
        watched: Sequence[TypedTable[Any]],
        owner: Callable[[str], URL | None],
        peers: Callable[[], list[URL]],
        peer_client: PeerClient | None = None,
    ) -> None:
        self.settings = settings
        self.peer_client = peer_client or PeerClient(settings.peer_network_encrypted)
        self.readable = readable
        self.local_tenants = tenants
        self._owner_of = owner
        self._peer_urls = peers
        self._subscribers: set[asyncio.Queue[LiveUpdate]] = set()
        for table in watched:  # compute-records: "tenant/request" keys, the tenant's row changes
            table.listeners.append(self._on_change)

    # -- live updates ------------------------------------------------------------------------------

    def _on_change(self, table: str, key: str, value: BaseModel) -> None:
        if not self._subscribers:
            return  # nobody watching: skip the serialisation on the agents' hot path
        update = LiveUpdate(kind=table, tenant_id=key.split("/", 1)[0], data=value.model_dump(mode="json"))
        for queue in list(self._subscribers):
            if queue.qsize() < 1000:
                queue.put_nowait(update)

    async def updates(self) -> AsyncIterator[LiveUpdate]:
        queue: asyncio.Queue[LiveUpdate] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # -- routing ----------------------------------------------------------------------------------

    def _owner(self, tenant_id: str) -> URL | None:
        return self._owner_of(tenant_id)

    def _peers(self) -> list[URL]:
        return self._peer_urls()

    @staticmethod
    def _answer(reply: PeerReply) -> Any:
        """A peer's answer to a table read: the value's JSON, None for 404, else the owner counts as down."""
        if reply.status == 404:
            return None
        try:
            if reply.status != 200:
                raise ValueError(f"HTTP {reply.status}")
            return reply.json()
        except ValueError as exc:  # JsonRefused included
            logger.warning("a peer's answer to a table read was refused: %s", exc)
            raise owner_unavailable() from None

    async def _fetch(self, peer: URL, path: str) -> Any:
        headers = peer_headers(peer_secret(self.settings))
        try:
            reply = await self.peer_client.request(peer.with_path(path), headers=headers, timeout_s=5)
        except PeerUnavailable as exc:
            logger.warning("read from the worker %s failed: %s", peer.with_path("/"), exc.reason)
            raise owner_unavailable() from None
        return self._answer(reply)

    async def _get(self, table_name: str, tenant_id: str) -> Any:
        table = self.readable[table_name]
        reply = await self.peer_client.to_owner(
            lambda: self._owner(tenant_id), f"{INTERNAL_PREFIX}/{table_name}/{tenant_id}",
            headers=peer_headers(peer_secret(self.settings)), timeout_s=5,
        )
        if reply is None:  # this worker owns the tenant
            return table.get(tenant_id)
        raw = self._answer(reply)
        return None if raw is None else table.model.model_validate(raw)

    async def tenant(self, tenant_id: str) -> TenantRecord | None:
        value: TenantRecord | None = await self._get("tenants", tenant_id)
        return value

    async def quota(self, tenant_id: str) -> QuotaRecord | None:
        value: QuotaRecord | None = await self._get("quotas", tenant_id)
        return value

    async def provisioning_status(self, tenant_id: str) -> ProvisioningStatus | None:
        value: ProvisioningStatus | None = await self._get("provisioning-status", tenant_id)
        return value

    async def usage(self, tenant_id: str) -> UsageRecord | None:
        value: UsageRecord | None = await self._get("usage", tenant_id)
        return value

    async def users(self, tenant_id: str) -> TenantUsers | None:
        value: TenantUsers | None = await self._get("tenant-users", tenant_id)
        return value

    async def anomalies(self, tenant_id: str) -> AnomalyLog | None:
        value: AnomalyLog | None = await self._get("anomalies", tenant_id)
        return value

    async def utilization(self, tenant_id: str) -> TenantUtilization | None:
        value: TenantUtilization | None = await self._get("utilization", tenant_id)
        return value

    async def compute_held(self, tenant_id: str) -> ComputeHeld | None:
        value: ComputeHeld | None = await self._get("compute-held", tenant_id)
        return value

    async def compute_costs(self, tenant_id: str) -> TenantCosts | None:
        if "compute-costs" not in self.readable:
            return None
        value: TenantCosts | None = await self._get("compute-costs", tenant_id)
        return value

    async def tenants(self, offset: int, limit: int, tenant_ids: Sequence[str] | None = None) -> Page:
        records = {key: value for key, value in self.local_tenants.items()}
        peers = self._peers()
        results = await asyncio.gather(
            *(self._fetch(peer, f"{INTERNAL_PREFIX}/tenants") for peer in peers), return_exceptions=True
        )
        for peer, result in zip(peers, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("tenant list from %s failed: %s", peer, result)
                continue
            for raw in result or []:
                record = TenantRecord.model_validate(raw)
                records[record.tenant_id] = record
        selected = sorted(
            (r for r in records.values() if tenant_ids is None or r.tenant_id in tenant_ids),
            key=lambda r: r.tenant_id,
        )
        return Page(items=selected[offset : offset + limit], total=len(selected), offset=offset, limit=limit)


def internal_routes(
    settings: Settings, readable: Mapping[str, Readable], tenants: TypedTable[TenantRecord],
) -> aioweb.RouteTableDef:
    """The endpoints peers call to read this worker's local tables (guarded by PEER_SECRET)."""
    routes = aioweb.RouteTableDef()
    expected = peer_secret(settings)

    def check(request: aioweb.Request) -> None:
        require_peer(request, expected)

    @routes.get(f"{INTERNAL_PREFIX}/tenants", name="internal_state_tenants")
    async def local_tenants(request: aioweb.Request) -> aioweb.Response:
        check(request)
        return aioweb.json_response([value.model_dump(mode="json") for _, value in tenants.items()])

    @routes.get(INTERNAL_PREFIX + "/{table}/{key}", name="internal_state_value")
    async def local_value(request: aioweb.Request) -> aioweb.Response:
        check(request)
        table = readable.get(request.match_info["table"])
        if table is None:
            raise aioweb.HTTPNotFound()
        value = table.get(request.match_info["key"])
        if value is None:
            raise aioweb.HTTPNotFound()
        return aioweb.json_response(value.model_dump(mode="json"))

    return routes


class FaustCommandGateway:
    """Changes from the REST API, sent to the topics whose agents make them."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def submit_tenant(self, event: TenantCreated) -> None:
        await self._send(TENANT_CREATED, event.tenant_id, event)

    async def set_quota(self, tenant_id: str, quota: Quota, actor: str) -> None:
        request = QuotaUpdateRequested(
            event_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            occurred_at=datetime.now(UTC),
            quota=quota.model_dump(),
            actor=actor,
        )
        await self._send(QUOTA_UPDATES, tenant_id, request)

    async def lift_over_quota(self, tenant_id: str, resources: list[QuotaResource], actor: str) -> None:
        # The same topic as a quota change: the owner applies both in their order, so a lift and a raised
        # quota of the same tenant never race.
        request = QuotaUpdateRequested(
            event_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            occurred_at=datetime.now(UTC),
            lift_over_quota=resources,
            actor=actor,
        )
        await self._send(QUOTA_UPDATES, tenant_id, request)

    async def release_quarantine(self, tenant_id: str, resource_id: str, actor: str) -> None:
        request = QuotaUpdateRequested(
            event_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            occurred_at=datetime.now(UTC),
            release_quarantine=resource_id,
            actor=actor,
        )
        await self._send(QUOTA_UPDATES, tenant_id, request)

    async def delete_tenant(self, tenant_id: str, purge: bool, actor: str) -> None:
        event = TenantDeleted(
            event_id=str(uuid.uuid4()), tenant_id=tenant_id, occurred_at=datetime.now(UTC), purge=purge
        )
        await self._send(TENANT_DELETED, tenant_id, event)

    async def audit(self, record: AuditEvent) -> None:
        await self._send(AUDIT_EVENTS, record.tenant_id or "-", record)


def build_planner(provisioners: Callable[[], Mapping[str, Provisioner]]) -> Planner:
    """Dry runs: the tier's quota and every backend's plan for a tenant-created event."""

    def plan(event: TenantCreated) -> dict[str, Any]:
        quota = quota_for_tier(event.tier)
        spec = {
            "name": event.name,
            "tier": event.tier.value,
            "region": event.region,
            "owner_user_id": event.owner_user_id,
            "quota": quota.model_dump(),
        }
        return {"quota": quota.model_dump(), "resources": dry_run_plan(event.tenant_id, spec, provisioners())}

    return plan
