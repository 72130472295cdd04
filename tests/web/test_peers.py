"""Peer calls: a credential no outsider can compute (PEER_SECRET, required to start a worker), checked in
constant time on every internal route, and never sent over plain http off 127.0.0.1 unless the operator
declared the network between workers encrypted."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from yarl import URL

from pipeline.config import Settings
from tests.web.conftest import PEER_SECRET, SECRET
from web.compute import OwnerRouter
from web.errors import error_middleware
from web.peer_client import PeerClient
from web.peers import MIN_PEER_SECRET_CHARS, PeerConfigError, peer_secret, transport_allowed

ROOT = Path(__file__).resolve().parents[2]


def old_internal_token(settings: Settings) -> str:
    """What the internal endpoints accepted before: an HMAC keyed by JWT_SECRET, or by the public APP_ID."""
    key = (settings.jwt_secret.get_secret_value() if settings.jwt_secret else settings.app_id).encode()
    return hmac.new(key, b"internal-state-v1:" + settings.app_id.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("jwt_secret", [None, SECRET])
async def test_a_token_derived_from_app_id_or_jwt_secret_opens_no_internal_endpoint(jwt_secret: str | None) -> None:
    from pipeline.tenants.models import TenantRecord
    from pipeline.typed_table import TypedTable
    from web.faust_state import internal_routes

    settings = Settings(jwt_secret=SecretStr(jwt_secret) if jwt_secret else None, peer_secret=SecretStr(PEER_SECRET))
    app = web.Application(middlewares=[error_middleware])  # as on the worker
    tenants: TypedTable[TenantRecord] = TypedTable({}, TenantRecord)
    app.router.add_routes(internal_routes(settings, {"tenants": tenants}, tenants))
    async with TestClient(TestServer(app)) as client:
        derived = old_internal_token(settings)
        for header in ("X-Internal-Token", "X-Peer-Token"):
            response = await client.get("/internal/v1/state/tenants", headers={header: derived})
            assert response.status == 403, header
        assert (await client.get("/internal/v1/state/tenants")).status == 403
        response = await client.get("/internal/v1/state/tenants", headers={"X-Peer-Token": PEER_SECRET})
        assert response.status == 200


@pytest.mark.parametrize("value", [None, "", "short", "x" * (MIN_PEER_SECRET_CHARS - 1), " " * 40])
def test_a_missing_or_short_peer_secret_is_a_configuration_error(value: str | None) -> None:
    with pytest.raises(PeerConfigError, match="PEER_SECRET"):
        peer_secret(Settings(peer_secret=SecretStr(value) if value is not None else None))


def test_the_worker_refuses_to_start_without_a_peer_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PEER_SECRET"}
    env.update(JWT_SECRET=SECRET, DATA_DIR=str(tmp_path), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    done = subprocess.run([sys.executable, "-m", "pipeline", "worker"], cwd=ROOT, env=env, capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refusing to start: PEER_SECRET is not set")


LOOPBACK = st.sampled_from(["127.0.0.1", "127.3.2.1", "localhost", "[::1]"])
REMOTE = st.ip_addresses(v=4).filter(lambda ip: not ip.is_loopback).map(str) | st.sampled_from(
    ["worker-1.workers.svc", "10.0.0.7", "[fd00::7]"]
)


@given(host=REMOTE, port=st.integers(1, 65535))
def test_plain_http_off_loopback_is_refused_unless_the_network_is_declared_encrypted(host: str, port: int) -> None:
    url = URL(f"http://{host}:{port}")
    assert not transport_allowed(url, network_encrypted=False)
    assert transport_allowed(url, network_encrypted=True)
    assert transport_allowed(URL(f"https://{host}:{port}"), network_encrypted=False)


@given(host=LOOPBACK, port=st.integers(1, 65535))
def test_loopback_peers_are_reached_over_http(host: str, port: int) -> None:
    assert transport_allowed(URL(f"http://{host}:{port}"), network_encrypted=False)


async def test_a_compute_forward_to_a_plain_http_remote_owner_is_not_made() -> None:
    router = OwnerRouter(app=None, token=PEER_SECRET, records_topic=None, peer_client=PeerClient())
    reply = await router.forward(URL("http://10.9.8.7:6066"), "POST", "/internal/v1/compute/requests/a.b/access")
    assert reply.status == 503 and reply.body["error"]["code"] == "peer-transport-insecure"


async def test_a_scaling_read_is_not_forwarded_with_the_users_token_over_plain_http() -> None:
    from tests.web.conftest import ADMIN, FakeReadiness, bearer, fixed_quota, tenant_event
    from tests.web.memory_state import MemoryState
    from tests.web.test_scaling_api import RemoteBackend, make_engine
    from web.auth import Authenticator
    from web.scaling import scaling_operations
    from web.server import build_root_app

    state = MemoryState(quota_for_tier=fixed_quota)
    await state.submit_tenant(tenant_event("acme"))
    backend = RemoteBackend(make_engine(state), URL("http://10.9.8.7:6066"))
    app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(),
                         extra_operations=scaling_operations(backend, state))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/v1/scaling/policies?tenant_id=acme", headers=bearer(ADMIN))
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "peer-transport-insecure"


async def test_a_read_whose_owning_worker_is_down_answers_503_not_500() -> None:
    # A killed worker still owns its tenants until the group rebalances: a read routed to it must tell the
    # client to retry (503 owner-unavailable, Retry-After), not fail with a 500.
    import socket

    from yarl import URL

    from pipeline.tenants.models import TenantRecord
    from pipeline.typed_table import TypedTable
    from web.errors import ApiError
    from web.faust_state import FaustStateReader

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = URL(f"http://127.0.0.1:{sock.getsockname()[1]}")  # nothing listens once the socket closes
    settings = Settings(peer_secret=SecretStr(PEER_SECRET))
    tenants: TypedTable[TenantRecord] = TypedTable({}, TenantRecord)
    reader = FaustStateReader(settings, {"tenants": tenants}, tenants, [tenants], owner=lambda tenant_id: dead,
                              peers=lambda: [])
    with pytest.raises(ApiError) as refused:
        await reader.tenant("acme")
    assert refused.value.status == 503 and refused.value.code == "owner-unavailable"
