"""The web layer served with in-memory state: a root app on a test server, tokens, a fake readiness."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from pipeline.events.models import TenantCreated, Tier
from pipeline.provisioners.tiers import Quota
from tests.web.memory_state import MemoryState
from web.api import Planner
from web.auth import Authenticator, issue_dev_token
from web.server import build_root_app

SECRET = "unit-test-secret-0123456789abcdef-0123456789"
PEER_SECRET = "unit-test-peer-secret-0123456789abcdef"
TIER_QUOTAS = {
    Tier.FREE: Quota(cpu_cores=1, memory_gib=2, gpus=0, storage_gib=5),
    Tier.STANDARD: Quota(cpu_cores=4, memory_gib=16, gpus=0, storage_gib=100),
    Tier.ENTERPRISE: Quota(cpu_cores=32, memory_gib=128, gpus=4, storage_gib=2000),
}


def fixed_quota(tier: Tier) -> Quota:
    return TIER_QUOTAS[tier]


class FakeReadiness:
    def __init__(self) -> None:
        self.ready = True
        self.reason = "ready"
        self.error: Exception | None = None

    def __call__(self) -> tuple[bool, str]:
        if self.error is not None:
            raise self.error
        return self.ready, self.reason


def token(
    roles: Sequence[str] = ("platform-admin",),
    tenant_id: str | None = None,
    sub: str = "alice",
    ttl: timedelta = timedelta(hours=12),  # module-level tokens are minted at collection time
    secret: str = SECRET,
) -> str:
    return issue_dev_token(secret, sub, roles, tenant_id, ttl)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


ADMIN = token(("platform-admin",), None, sub="root-admin")


def tenant_event(tenant_id: str, tier: Tier = Tier.STANDARD, name: str | None = None) -> TenantCreated:
    return TenantCreated(
        event_id=f"evt-{tenant_id}",
        tenant_id=tenant_id,
        occurred_at=datetime.now(UTC),
        name=name or f"{tenant_id.title()} Inc",
        tier=tier,
    )


@pytest.fixture
def state() -> MemoryState:
    return MemoryState(quota_for_tier=fixed_quota)


@pytest.fixture
def readiness() -> FakeReadiness:
    return FakeReadiness()


@pytest.fixture
def planner() -> Planner | None:
    return None


@pytest.fixture
async def client(state: MemoryState, readiness: FakeReadiness, planner: Planner | None) -> AsyncIterator[TestClient]:
    app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), readiness, planner)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def check_problem(status: int, content_type: str, body: Any) -> dict[str, Any]:
    """``body`` is an RFC 9457 problem document of ``status`` with the service's members (``code``,
    ``details``, and the earlier ``error`` object saying the same); returns that ``error`` object."""
    assert content_type == "application/problem+json", content_type
    assert isinstance(body, dict), body
    assert set(body) - {"instance"} == {"type", "title", "status", "detail", "code", "details", "error"}, body
    assert body["type"] == "about:blank" and body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["code"], str) and isinstance(body["detail"], str), body
    assert isinstance(body["details"], dict), body
    assert "instance" not in body or isinstance(body["instance"], str), body
    assert body["error"] == {"code": body["code"], "message": body["detail"], "details": body["details"]}, body
    error: dict[str, Any] = body["error"]
    return error


async def error_of(response: ClientResponse) -> dict[str, Any]:
    """The error object of a response, after checking it is a problem document of the common shape."""
    return check_problem(response.status, response.content_type, await response.json(content_type=None))


async def next_event(response: ClientResponse) -> tuple[str, Any]:
    """The next server-sent event (name, decoded data) of a stream; comments are skipped.

    Gives up after 10 s so that a stream that never sends fails the test instead of hanging it.
    """

    async def read() -> tuple[str, Any]:
        name, data = "message", []
        while True:
            raw = await response.content.readline()
            if not raw:
                raise EOFError("the event stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if data:
                    return name, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)

    async with asyncio.timeout(10):
        return await read()
