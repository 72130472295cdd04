"""Routing a tenant's compute calls to the worker that owns its records: the :class:`Reply` that crosses
the hop, and :class:`OwnerRouter` (the owner's URL, the forwarded call through ``web/peer_client``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from yarl import URL

from pipeline.compute.lifecycle import ComputeRecord
from web.compute.models import INTERNAL_BASE, REPLAYED_HEADER
from web.errors import PROBLEM_JSON, ApiError, error_body, problem_of
from web.peer_client import PeerClient, PeerUnavailable
from web.peers import peer_headers
from web.routing import owner_of, peer_urls

logger = logging.getLogger(__name__)


# -- replies that can cross a worker hop ----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A status and JSON body, produced by the owner worker and relayed as is by a forwarding one."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model: BaseModel, status: int = 200) -> Reply:
        return cls(status, model.model_dump(mode="json"))

    @classmethod
    def error(cls, exc: ApiError) -> Reply:
        return cls(exc.status, error_body(exc.code, exc.message, exc.details, status=exc.status), dict(exc.headers))

    def raise_for_error(self, **more_details: Any) -> None:
        """An error reply as the :class:`ApiError` it was (so the audit record names its code, and the public
        route answers it as its own problem, with its own ``instance``); ``more_details`` are added to its
        details."""
        if self.status < 400:
            return
        code, message, details = problem_of(self.body) or ("error", "error", {})
        raise ApiError(self.status, code, message, {**details, **more_details}, self.headers)

    def response(self) -> web.Response:
        content_type = PROBLEM_JSON if self.status >= 400 else "application/json"
        return web.json_response(self.body, status=self.status, headers=self.headers, content_type=content_type)


# -- routing to the owner ---------------------------------------------------------------------------------


#: The owner's answer headers a forwarding worker passes on.
_RELAYED_HEADERS = frozenset({"Retry-After", REPLAYED_HEADER})


class OwnerRouter:
    """Which worker owns a tenant's compute records, and calls to its internal endpoints."""

    def __init__(self, app: Any, token: str, records_topic: Any, peer_client: PeerClient) -> None:
        self.app = app
        self.token = token
        self.records_topic = records_topic
        self.peer_client = peer_client

    def owner(self, tenant_id: str) -> URL | None:
        """URL of the worker owning ``tenant_id``'s compute records, or ``None`` when that is this worker."""
        return owner_of(self.app, tenant_id, self.records_topic)

    def peers(self) -> list[URL]:
        return peer_urls(self.app)

    async def forward(self, owner: URL, method: str, path: str, *, body: Any = None, timeout_s: float = 30.0,
                      query: dict[str, str] | None = None) -> Reply:
        url = owner.with_path(path).with_query(query or {})
        try:
            reply = await self.peer_client.request(url, method, headers=peer_headers(self.token), json_body=body,
                                                   timeout_s=timeout_s)
            payload = reply.json()
        except ApiError as exc:  # the transport rule refused the call
            return Reply.error(exc)
        except (PeerUnavailable, ValueError) as exc:
            logger.warning("compute call to the owner %s failed: %s", owner, type(exc).__name__)
            return Reply.error(ApiError(503, "owner-unavailable", "the worker owning this tenant did not answer; "
                                        "retry later", headers={"Retry-After": "5"}))
        return Reply(reply.status, payload, {k: v for k, v in reply.headers.items() if k in _RELAYED_HEADERS})

    async def holding_from_peers(self) -> list[ComputeRecord]:
        peers = self.peers()
        replies = await asyncio.gather(
            *(self.forward(peer, "GET", f"{INTERNAL_BASE}/holding", timeout_s=5) for peer in peers)
        )
        records: list[ComputeRecord] = []
        for peer, reply in zip(peers, replies, strict=True):
            if reply.status != 200 or not isinstance(reply.body, list):
                logger.warning("holding compute records from %s: HTTP %d", peer, reply.status)
                continue
            records.extend(ComputeRecord.model_validate(raw) for raw in reply.body)
        return records
