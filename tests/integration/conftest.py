from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack.base import StackContext
from devstack.harness.tenant_provisioning import SNAPSHOT_SIGNING_KEY, EventPlane, Publisher
from devstack.harness.worker import WorkerProcess, free_port

JWT_SECRET = "integration-test-secret-of-32-bytes-or-more"


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def admin_token() -> str:
    from web.auth import issue_dev_token

    return issue_dev_token(JWT_SECRET, "test-admin", ["platform-admin"], None, timedelta(hours=1))


@pytest.fixture(scope="module")
def event_plane(
    stack_ctx: StackContext, pulsar_service: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EventPlane]:
    """A Kafka broker and a Pulsar namespace of this module's own, so no other run's events interfere."""
    plane = EventPlane.start(stack_ctx.cache_dir, tmp_path_factory.mktemp("event-plane"), pulsar_service)
    yield plane
    plane.stop()


@pytest.fixture
def stream_env(event_plane: EventPlane) -> dict[str, str]:
    """Environment of a worker with the bridge on and the executor off (no backends needed)."""
    return {
        **event_plane.env(),
        "APP_ID": f"it-{secrets.token_hex(4)}",
        "JWT_SECRET": JWT_SECRET,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY,
        "EXECUTOR_ENABLED": "false",
        "STORE": "rocksdb://",
    }


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(env: dict[str, str], port: int | None = None, data_dir: Path | None = None) -> WorkerProcess:
        port = port or free_port()
        worker = WorkerProcess(env, port, data_dir or tmp_path / f"data-{port}", tmp_path / f"worker-{port}.log")
        workers.append(worker.start())
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def publish(event_plane: EventPlane) -> Iterator[Callable[[str, Any], None]]:
    publisher = Publisher(event_plane)
    yield publisher.send
    publisher.close()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
