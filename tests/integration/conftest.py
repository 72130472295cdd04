from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pulsar
import pytest

from tests.integration.worker import WorkerProcess

JWT_SECRET = "integration-test-secret-of-32-bytes-or-more"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def admin_token() -> str:
    from web.auth import issue_dev_token

    return issue_dev_token(JWT_SECRET, "test-admin", ["platform-admin"], None, timedelta(hours=1))


@pytest.fixture
def stream_env(kafka_service: dict[str, str], pulsar_service: dict[str, str]) -> dict[str, str]:
    """Environment of a worker with the bridge on and the executor off (no backends needed)."""
    return {
        **kafka_service,
        **pulsar_service,
        "APP_ID": f"it-{secrets.token_hex(4)}",
        "JWT_SECRET": JWT_SECRET,
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
def publish(pulsar_service: dict[str, str]) -> Iterator[Callable[[str, Any], None]]:
    client = pulsar.Client(pulsar_service["PULSAR_URL"])
    producers: dict[str, pulsar.Producer] = {}

    def send(topic: str, event: Any) -> None:
        if topic not in producers:
            producers[topic] = client.create_producer(f"persistent://public/default/{topic}")
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        producers[topic].send(payload)

    yield send
    client.close()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
