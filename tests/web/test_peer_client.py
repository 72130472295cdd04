"""The one client for calls between workers: owner lookup, one more try after a rebalance, bounded answers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from web import peer_client as peer_client_module
from web.errors import ApiError
from web.peer_client import PeerClient, PeerUnavailable


def dead_url() -> URL:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return URL(f"http://127.0.0.1:{sock.getsockname()[1]}")  # nothing listens once the socket closes


CALLS = web.AppKey("calls", list[str])


@pytest.fixture
async def peer() -> AsyncIterator[TestServer]:
    app = web.Application()
    calls: list[str] = []

    async def value(request: web.Request) -> web.Response:
        calls.append(request.method)
        return web.json_response({"served_by": "peer", "path": request.path}, headers={"Retry-After": "7"})

    async def huge(_request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (peer_client_module.MAX_PEER_RESPONSE_BYTES + 1))

    app.router.add_route("*", "/value", value)
    app.router.add_get("/huge", huge)
    app[CALLS] = calls
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[PeerClient]:
    peers = PeerClient()
    try:
        yield peers
    finally:
        await peers.close()


def base(server: TestServer) -> URL:
    return URL(str(server.make_url("/")))


async def test_the_owner_answers_and_the_session_is_reused(peer: TestServer, client: PeerClient) -> None:
    first = await client.to_owner(lambda: base(peer), "/value")
    session = client._session
    second = await client.to_owner(lambda: base(peer), "/value")
    assert first is not None and second is not None
    assert first.status == 200 and first.json() == {"served_by": "peer", "path": "/value"}
    assert first.headers["Retry-After"] == "7"
    assert client._session is session  # one session for every call


async def test_no_call_when_this_worker_owns_the_tenant(client: PeerClient) -> None:
    assert await client.to_owner(lambda: None, "/value") is None
    assert client._session is None


async def test_a_get_is_asked_again_at_the_new_owner_after_a_rebalance(
    peer: TestServer, client: PeerClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peer_client_module, "REROUTE_PAUSE_S", 0.0)
    owners = iter([dead_url(), base(peer)])
    reply = await client.to_owner(lambda: next(owners), "/value")
    assert reply is not None and reply.json()["served_by"] == "peer"


async def test_a_rebalance_that_made_this_worker_the_owner_serves_locally(
    client: PeerClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peer_client_module, "REROUTE_PAUSE_S", 0.0)
    owners = iter([dead_url(), None])
    assert await client.to_owner(lambda: next(owners), "/value") is None


async def test_an_owner_that_stays_down_is_a_503_problem(client: PeerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_client_module, "REROUTE_PAUSE_S", 0.0)
    dead = dead_url()
    with pytest.raises(ApiError) as refused:
        await client.to_owner(lambda: dead, "/value")
    assert (refused.value.status, refused.value.code) == (503, "owner-unavailable")


async def test_a_post_is_not_sent_twice(peer: TestServer, client: PeerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_client_module, "REROUTE_PAUSE_S", 0.0)
    owners = iter([dead_url(), base(peer)])
    with pytest.raises(ApiError) as refused:
        await client.to_owner(lambda: next(owners), "/value", "POST", json_body={"a": 1})
    assert refused.value.status == 503
    assert peer.app[CALLS] == []  # the moved owner was not asked: the first call may have taken effect


async def test_an_answer_larger_than_the_bound_is_not_read(peer: TestServer, client: PeerClient) -> None:
    with pytest.raises(PeerUnavailable) as refused:
        await client.request(base(peer).with_path("/huge"))
    assert "larger than" in refused.value.reason


async def test_credentials_are_not_sent_over_plain_http_off_the_machine(client: PeerClient) -> None:
    with pytest.raises(ApiError) as refused:
        await client.request(URL("http://10.1.2.3:6066/value"), headers={"Authorization": "Bearer x"})
    assert (refused.value.status, refused.value.code) == (503, "peer-transport-insecure")
    assert client._session is None
