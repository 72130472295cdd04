"""Deployment settings on real worker processes (issue 15, settings): state per app id, a wildcard bind, JSON logs."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from devstack.harness.worker import WorkerFailed, WorkerProcess
from pipeline.contract.topics import AUDIT_EVENTS
from tests.integration.conftest import now_iso
from tests.integration.test_stream_core import read_topic

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_workers_of_two_app_ids_share_a_data_dir_and_both_start(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str, tmp_path: Path,
) -> None:
    # Before the state followed the app id, the second worker opened the first one's RocksDB files (named by
    # table only), found offsets beyond its own (empty) changelogs and stopped with Faust's ConsistencyError.
    data_dir = tmp_path / "shared-data"
    first = start_worker(stream_env, data_dir=data_dir)
    first.wait_ready()
    # Nine tenants on four partitions: some partition holds three, so the first worker's state has a changelog
    # offset of 2 or more there (Faust skips its consistency check for a persisted offset of 0).
    tenants = [f"t{run_id}-appid{i}" for i in range(9)]
    for tenant in tenants:
        publish("tenant-created-events", {"event_id": f"{tenant}-evt", "tenant_id": tenant, "occurred_at": now_iso(),
                                          "name": "App id", "tier": "standard", "owner_user_id": "owner"})
    for tenant in tenants:
        wait_for(lambda t=tenant: first.get(f"/api/v1/tenants/{t}", admin_token)[0] == 200, 120, "the tenants")
    first.stop()  # graceful: its table state is on disk, with its changelog offsets

    other_app = f"it-other-{secrets.token_hex(4)}"
    second = start_worker({
        **stream_env, "APP_ID": other_app, "BRIDGE_ENABLED": "false",
        # A wildcard bind, as in the Dockerfile: the worker still starts and advertises a callable address.
        "WEB_HOST": "0.0.0.0", "POD_IP": "127.0.0.1",  # noqa: S104 (the test's own worker)
        "LOG_FORMAT": "json",
    }, data_dir=data_dir)
    second.wait_ready()
    # Its own consumer group reads the input topics from the start: the tenant is in its own state too.
    for tenant in tenants:
        record = wait_for(lambda t=tenant: (lambda r: r[1] if r[0] == 200 else None)(
            second.get(f"/api/v1/tenants/{t}", admin_token)), 120, "the tenants on the second")
        assert record["tier"] == "standard"
    assert {p.name for p in data_dir.iterdir()} >= {stream_env["APP_ID"], other_app}
    assert (data_dir / other_app / "v1" / "tables").is_dir()

    # LOG_FORMAT=json: what the worker logged are JSON objects with the fixed fields.
    lines = [line for line in second.log_path.read_text(errors="replace").splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records, "the worker logged no JSON line"
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)


def test_state_ahead_of_its_changelogs_stops_the_worker_with_the_folder_to_delete(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str, tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    first = start_worker(stream_env, data_dir=data_dir)
    first.wait_ready()
    tenants = [f"t{run_id}-reset{i}" for i in range(9)]  # some partition holds three: offsets of 2 or more
    for tenant in tenants:
        publish("tenant-created-events", {"event_id": f"{tenant}-evt", "tenant_id": tenant, "occurred_at": now_iso(),
                                          "name": "Reset", "tier": "free", "owner_user_id": "owner"})
    for tenant in tenants:
        wait_for(lambda t=tenant: first.get(f"/api/v1/tenants/{t}", admin_token)[0] == 200, 120, "the tenants")
    first.stop()

    # What a changelog reset looks like to a worker: local state whose offsets its (new, empty) changelogs lack.
    reset_app = f"it-reset-{secrets.token_hex(4)}"
    shutil.copytree(data_dir / stream_env["APP_ID"], data_dir / reset_app)
    env = {**stream_env, "APP_ID": reset_app, "BRIDGE_ENABLED": "false"}
    stale = start_worker(env, data_dir=data_dir)
    tables = (data_dir / reset_app / "v1" / "tables").resolve()
    with pytest.raises(WorkerFailed) as failed:
        stale.wait_ready()
    assert "ahead of its Kafka changelog topics" in str(failed.value)
    assert f"delete {tables} and start it again" in str(failed.value)

    # The documented recovery (docs/operations.md): delete that folder and start again.
    shutil.rmtree(tables)
    recovered = start_worker(env, data_dir=data_dir)
    recovered.wait_ready()
    for tenant in tenants:
        wait_for(lambda t=tenant: recovered.get(f"/api/v1/tenants/{t}", admin_token)[0] == 200, 120,
                 "the tenants after the recovery")


def one_tenant_per_partition(prefix: str, partitions: int = 4) -> list[str]:
    """Tenant ids whose records land on every partition (Kafka's default partitioner, as the bridge uses)."""
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    chosen: dict[int, str] = {}
    for i in range(1000):
        chosen.setdefault(partitioner(f"{prefix}{i}".encode(), every, every), f"{prefix}{i}")
        if len(chosen) == partitions:
            break
    return sorted(chosen.values())


def forwarded_reads(bootstrap: str, tenants: set[str]) -> set[str]:
    """The tenants whose state an owner served to a peer (audited internal reads that succeeded)."""
    records = asyncio.run(read_topic(bootstrap, AUDIT_EVENTS, lambda r: r.get("tenant_id") in tenants))
    return {r["tenant_id"] for r in records
            if r.get("action") == "internal-internal_state_value" and r.get("outcome") == "succeeded"}


def test_two_workers_bound_to_every_interface_route_reads_to_each_other(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str,
) -> None:
    # As in the Dockerfile and compose: WEB_HOST=0.0.0.0. Each worker advertised http://0.0.0.0:<port>, a
    # non-loopback address, so every forwarded read was refused (peer-transport-insecure) and a pod took every
    # peer on the same port for itself. Now each advertises POD_IP (here the loopback, the only address a test
    # may call).
    env = {**stream_env, "WEB_HOST": "0.0.0.0", "POD_IP": "127.0.0.1"}  # noqa: S104 (the test's own workers)
    first, second = start_worker(env), start_worker({**env, "LOG_FORMAT": "json"})
    first.wait_ready()
    second.wait_ready()
    tenants = one_tenant_per_partition(f"t{run_id}-wild")
    for tenant in tenants:
        publish("tenant-created-events", {"event_id": f"{tenant}-evt", "tenant_id": tenant, "occurred_at": now_iso(),
                                          "name": "Wildcard", "tier": "standard", "owner_user_id": "owner"})

    def everywhere_and_forwarded() -> bool:
        readable = all(worker.get(f"/api/v1/tenants/{tenant}", admin_token)[0] == 200
                       for worker in (first, second) for tenant in tenants)
        # Two workers share the four partitions: each tenant has one worker that does not own it, and whose
        # read is answered by the owner through its advertised URL.
        return readable and forwarded_reads(stream_env["KAFKA_BOOTSTRAP_SERVERS"], set(tenants)) == set(tenants)

    wait_for(everywhere_and_forwarded, 240, "every tenant readable from both workers, through the owner")

    # LOG_FORMAT=json with the bridge (and its Pulsar client) on: every line the worker wrote is a JSON object.
    lines = [line for line in second.log_path.read_text(errors="replace").splitlines() if line.strip()]
    assert lines and all(json.loads(line).keys() >= {"timestamp", "level", "logger", "message"} for line in lines)
