"""A backend that cannot be reached at all is a :class:`BackendUnavailable` (the executor waits for it); a
reachable backend's errors are not (issue #16). No real backend is needed: closed local ports and a tiny
aiohttp server answering 503."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import urllib3
import yaml
from aiohttp import web
from cassandra.cluster import NoHostAvailable

from pipeline.config import Settings
from pipeline.provisioners.base import RESOURCES, TenantSpec, is_unreachable
from pipeline.provisioners.errors import BackendUnavailable, PermanentError, TransientError
from pipeline.provisioners.registry import aclose_all, build_provisioners


def closed_port() -> int:
    """A local TCP port nothing listens on: bound by the OS, then closed (connecting to it is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    return path


def settings_at(tmp_path: Path, host: str, port: int) -> Settings:
    """Every backend at ``host:port``."""
    return Settings(
        cassandra_hosts=host, cassandra_port=port, minio_endpoint=f"{host}:{port}",
        pulsar_admin_url=f"http://{host}:{port}", ignite_host=host, ignite_port=port,
        elasticsearch_host=f"http://{host}:{port}", openproject_url=f"http://{host}:{port}",
        kubeconfig=kubeconfig(tmp_path / "kubeconfig", f"http://{host}:{port}"),
    )


def tenant() -> TenantSpec:
    return TenantSpec(tenant_id="acme-prod", name="Acme", tier="standard", owner_user_id="alice")


@pytest.mark.parametrize("resource", RESOURCES)
async def test_a_refused_connection_is_backend_unavailable(tmp_path: Path, resource: str) -> None:
    port = closed_port()
    provisioners = build_provisioners(settings_at(tmp_path, "127.0.0.1", port), only=[resource])
    provisioner = provisioners[resource]
    try:
        for call in (provisioner.apply, provisioner.verify):
            with pytest.raises(BackendUnavailable) as caught:
                await call(tenant())
            error = caught.value
            assert error.retryable and error.resource == resource
            assert error.address is not None
            assert str(port) in error.address or resource == "kubernetes"
    finally:
        await aclose_all(provisioners)


async def test_a_host_name_that_does_not_resolve_is_backend_unavailable(tmp_path: Path) -> None:
    # ``.invalid`` never resolves (RFC 6761).
    provisioners = build_provisioners(settings_at(tmp_path, "backend.invalid", 9200), only=["elasticsearch"])
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await provisioners["elasticsearch"].apply(tenant())
        assert caught.value.address == "http://backend.invalid:9200"
    finally:
        await aclose_all(provisioners)


async def test_a_kubeconfig_not_written_yet_is_backend_unavailable_a_broken_one_permanent(tmp_path: Path) -> None:
    missing = Settings(kubeconfig=tmp_path / "not-yet" / "kubeconfig")
    provisioners = build_provisioners(missing, only=["kubernetes"])
    with pytest.raises(BackendUnavailable) as caught:
        await provisioners["kubernetes"].apply(tenant())
    assert "does not exist" in str(caught.value)
    broken = tmp_path / "broken"
    broken.write_text("not: [a kubeconfig")
    provisioners = build_provisioners(Settings(kubeconfig=broken), only=["kubernetes"])
    with pytest.raises(PermanentError):
        await provisioners["kubernetes"].apply(tenant())


@pytest.fixture
async def unavailable_server() -> AsyncIterator[int]:
    """A reachable HTTP server answering every request 503 Service Unavailable."""

    async def handler(_: web.Request) -> web.Response:
        return web.json_response({"error": "starting"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port
    await runner.cleanup()


@pytest.mark.parametrize("resource", ["elasticsearch", "pulsar", "openproject", "s3", "kubernetes"])
async def test_a_reachable_server_answering_503_is_transient_not_unavailable(
    tmp_path: Path, unavailable_server: int, resource: str,
) -> None:
    provisioners = build_provisioners(settings_at(tmp_path, "127.0.0.1", unavailable_server), only=[resource])
    try:
        with pytest.raises(TransientError) as caught:
            await provisioners[resource].apply(tenant())
        assert not isinstance(caught.value, BackendUnavailable)
    finally:
        await aclose_all(provisioners)


# -- the classification itself (pure) --------------------------------------------------------------------------


def wrapped(inner: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("client failed") from inner
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
    urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.NewConnectionError(None, "refused")),  # type: ignore[arg-type]
    urllib3.exceptions.ConnectTimeoutError("connect timed out"),
    aiohttp.ConnectionTimeoutError("connect timed out"),
    NoHostAvailable("Unable to connect to any servers", {"a:9042": ConnectionRefusedError(111, "refused"),
                                                          "b:9042": OSError(errno.ENETUNREACH, "unreachable")}),
])
def test_unreachable_errors(exc: BaseException) -> None:
    assert is_unreachable(exc)


@pytest.mark.parametrize("exc", [
    TimeoutError("read timed out"),
    ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    aiohttp.ServerDisconnectedError(),
    aiohttp.SocketTimeoutError("read timed out"),
    urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
    urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.ResponseError("too many 503")),  # type: ignore[arg-type]
    NoHostAvailable("Unable to complete the operation", {"a:9042": ConnectionRefusedError(111, "refused"),
                                                          "b:9042": TimeoutError("read timed out")}),
    NoHostAvailable("Unable to complete the operation", {}),
    wrapped(ValueError("bad answer")),
])
def test_errors_of_a_reachable_backend_are_not_unreachable(exc: BaseException) -> None:
    assert not is_unreachable(exc)
