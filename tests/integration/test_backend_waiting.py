"""Backends that join late (issue #16): the worker starts and is ready with only Kafka and Pulsar reachable, and
provisioning on a backend that cannot be reached shows ``waiting`` (not a failure) until the backend answers.

Two real workers on an event plane of this module's own: one whose every backend but Pulsar points at closed
local ports (its /ready answers 200; a tenant's Pulsar resource gets ready, the six others wait), and one whose
Elasticsearch URL points at a closed port while the other backends are the shared real ones; a TCP forwarder
started later on that port (to the real Elasticsearch) makes the index, and the tenant, ready. Polls with
generous timeouts; nothing is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from devstack.harness.tenant_provisioning import (
    Api,
    EventPlane,
    Publisher,
    executor_env,
    free_port,
    purge_tenants,
    settings_from,
    tenant_created,
)
from devstack.harness.worker import WorkerProcess, poll
from devstack.process import log_tail
from pipeline.config import Settings
from pipeline.provisioners.base import RESOURCES, TenantSpec
from pipeline.provisioners.registry import aclose_all, build_provisioners
from tests.integration.conftest import JWT_SECRET

pytestmark = pytest.mark.integration

RUN = secrets.token_hex(3)
#: Generous: two shared cores, other sessions' tests.
TIMEOUT = 240.0
#: Fast backoff while waiting, so a backend that joins is seen within seconds; the wait limit is far away.
FAST = {"EXECUTOR_BASE_DELAY_SECONDS": "0.2", "EXECUTOR_MAX_DELAY_SECONDS": "1",
        "PROVISIONING_BACKEND_WAIT_SECONDS": "3600", "RECONCILE_INTERVAL_SECONDS": "3"}


def wait_for(check: Callable[[], Any], what: str, worker: WorkerProcess, api: Api, tenant_id: str) -> Any:
    value = poll(check, TIMEOUT, interval=0.3)
    if value:
        return value
    pytest.fail(f"timed out after {TIMEOUT:.0f}s waiting for {what}\nstatus: {api.status(tenant_id)}\n"
                f"worker log:\n{log_tail(worker.log_path, 80)}", pytrace=False)


class Forwarder:
    """A TCP forwarder on 127.0.0.1:``port`` to ``target``, in a thread with its own event loop."""

    def __init__(self, port: int, target_host: str, target_port: int) -> None:
        self.port, self.target = port, (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="forwarder", daemon=True)
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    def start(self) -> Forwarder:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        server = self._server
        if server is not None:
            async def close() -> None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 5)

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


def closed_port() -> int:
    """A local port nothing listens on (bound by the OS, then closed): connecting to it is refused."""
    return free_port()


@pytest.fixture(scope="module")
def publisher(event_plane: EventPlane) -> Iterator[Publisher]:
    pub = Publisher(event_plane)
    yield pub
    pub.close()


def spec(label: str) -> TenantSpec:
    """A tenant unique to this run (as the tenant-created event below makes it, for the clean-up)."""
    value = f"wait-{label}-{RUN}"
    return TenantSpec(tenant_id=value, name=value, tier="standard")


def purge_pulsar(settings: Settings, tenant: TenantSpec) -> None:
    async def run() -> None:
        provisioners = build_provisioners(settings, only=["pulsar"])
        try:
            await provisioners["pulsar"].delete(tenant, purge=True)
        finally:
            await aclose_all(provisioners)

    asyncio.run(run())


@pytest.mark.timeout(600)
def test_the_worker_is_ready_with_only_kafka_and_pulsar_and_provisioning_waits_for_the_rest(
    event_plane: EventPlane, pulsar_service: dict[str, str], publisher: Publisher, admin_token: str,
    tmp_path: Path,
) -> None:
    down = closed_port()
    absent = {
        "CASSANDRA_HOSTS": "127.0.0.1", "CASSANDRA_PORT": str(down), "MINIO_ENDPOINT": f"127.0.0.1:{down}",
        "IGNITE_HOST": "127.0.0.1", "IGNITE_PORT": str(down), "ELASTICSEARCH_HOST": f"http://127.0.0.1:{down}",
        "OPENPROJECT_URL": f"http://127.0.0.1:{down}", "KUBECONFIG": str(tmp_path / "no-cluster-yet.yaml"),
        "PROMETHEUS_URL": f"http://127.0.0.1:{down}", "DERIVATIVES_ENGINE_URL": f"http://127.0.0.1:{down}",
    }
    env = executor_env(pulsar_service, event_plane, JWT_SECRET, **absent, **FAST)
    worker = WorkerProcess(env, free_port(), tmp_path / "data", tmp_path / "worker.log").start()
    try:
        worker.wait_ready(timeout=TIMEOUT)  # /ready answers 200 with no backend but Kafka and Pulsar
        api = Api(worker.url, admin_token)
        tenant = spec("none").tenant_id
        publisher.send("tenant-created-events", tenant_created(tenant, "standard"))
        others = [r for r in RESOURCES if r != "pulsar"]

        def pulsar_ready_others_waiting() -> dict[str, Any] | None:
            status = api.status(tenant)
            if not status or set(status["resources"]) != set(RESOURCES):
                return None
            states = {r: e["status"] for r, e in status["resources"].items()}
            return status if states["pulsar"] == "ready" and all(states[r] == "waiting" for r in others) else None

        status = wait_for(pulsar_ready_others_waiting, "pulsar ready, the six others waiting", worker, api, tenant)
        assert status["overall"] == "waiting"
        search = status["resources"]["elasticsearch"]
        assert search["last_error"].startswith(f"waiting for backend elasticsearch at http://127.0.0.1:{down}")
        assert search["attempts"] == 0
        assert status["resources"]["kubernetes"]["last_error"].startswith("waiting for backend kubernetes")
        log = worker.log_path.read_text(errors="replace")
        assert f"tenant {tenant}: elasticsearch create waiting after 0 attempt(s)" in log
        # At start, one line per missing backend (checked in the background, so polled for).

        def startup_lines() -> list[str] | None:
            lines = [line for line in worker.log_path.read_text(errors="replace").splitlines()
                     if "is not reachable (yet" in line]
            return lines if len(lines) >= len(others) else None

        lines = wait_for(startup_lines, "a start-up line per missing backend", worker, api, tenant)
        assert sorted(line.split("backend ", 1)[1].split(" ", 1)[0] for line in lines) == sorted(others)
        assert any(f"backend elasticsearch at http://127.0.0.1:{down} is not reachable" in line for line in lines)
    finally:
        worker.stop()
        purge_pulsar(settings_from(pulsar_service), spec("none"))  # the only backend that holds something


@pytest.mark.timeout(900)
def test_a_backend_that_joins_late_turns_waiting_into_ready(
    event_plane: EventPlane, publisher: Publisher, admin_token: str, tmp_path: Path,
    cassandra_service: dict[str, str], s3_service: dict[str, str], pulsar_service: dict[str, str],
    openproject_service: dict[str, str], ignite_service: dict[str, str], elasticsearch_service: dict[str, str],
    kubernetes_service: dict[str, str],
) -> None:
    backends = {**cassandra_service, **s3_service, **pulsar_service, **openproject_service, **ignite_service,
                **elasticsearch_service, **kubernetes_service}
    real = URL(backends["ELASTICSEARCH_HOST"])
    port = closed_port()
    env = executor_env(backends, event_plane, JWT_SECRET, ELASTICSEARCH_HOST=f"http://127.0.0.1:{port}", **FAST)
    worker = WorkerProcess(env, free_port(), tmp_path / "data", tmp_path / "worker.log").start()
    forwarder: Forwarder | None = None
    tenant = spec("late").tenant_id
    try:
        worker.wait_ready(timeout=TIMEOUT)
        api = Api(worker.url, admin_token)
        publisher.send("tenant-created-events", tenant_created(tenant, "standard"))
        others = [r for r in RESOURCES if r != "elasticsearch"]

        def search_waiting_others_ready() -> dict[str, Any] | None:
            status = api.status(tenant)
            if not status or set(status["resources"]) != set(RESOURCES):
                return None
            states = {r: e["status"] for r, e in status["resources"].items()}
            return status if states["elasticsearch"] == "waiting" and all(states[r] == "ready" for r in others) \
                else None

        during = wait_for(search_waiting_others_ready, "elasticsearch waiting, the six others ready", worker, api,
                          tenant)
        assert during["overall"] == "waiting"
        assert during["resources"]["elasticsearch"]["last_error"].startswith(
            f"waiting for backend elasticsearch at http://127.0.0.1:{port}")

        # Elasticsearch "comes up" on the configured address.
        forwarder = Forwarder(port, real.host or "127.0.0.1", real.port or 9200).start()

        after = wait_for(lambda: api.all_ready(tenant), "the tenant ready once elasticsearch answers", worker, api,
                         tenant)
        assert after["resources"]["elasticsearch"]["last_error"] is None
        log = worker.log_path.read_text(errors="replace")
        assert f"tenant {tenant}: backend elasticsearch joined after" in log
    finally:
        worker.stop()
        if forwarder is not None:
            forwarder.stop()
        # The module's event plane is shared by both workers: this one (a new consumer group) also read the first
        # test's tenant-created event and provisioned that tenant on the real backends.
        errors = purge_tenants(settings_from(backends), [spec("none"), spec("late")])
        assert not errors, f"cleanup failed: {errors}"
