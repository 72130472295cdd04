"""End to end through the real Pulsar, bridge, Kafka and worker processes (issue: stream core)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from devstack.harness.worker import WorkerProcess
from pipeline.provisioners.base import RESOURCES
from tests.integration.conftest import now_iso

pytestmark = pytest.mark.integration


def tenant_event(tenant_id: str, event_id: str, tier: str = "standard") -> dict[str, Any]:
    return {"event_id": event_id, "tenant_id": tenant_id, "occurred_at": now_iso(), "name": f"Tenant {tenant_id}",
            "tier": tier, "owner_user_id": "owner"}


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


async def read_topic(bootstrap: str, topic: str, match: Callable[[dict[str, Any]], bool], idle: float = 3.0
                     ) -> list[dict[str, Any]]:
    """Every record of ``topic`` (from the beginning) whose JSON value matches ``match``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(idle * 1000), max_records=5000)
            if not batches:
                return found
            for records in batches.values():
                for record in records:
                    value = json.loads(record.value)
                    if match(value):
                        found.append(value)
    finally:
        await consumer.stop()


def test_tenant_created_on_pulsar_reaches_the_api_and_emits_commands_once(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str,
) -> None:
    worker = start_worker(stream_env)
    worker.wait_ready()
    tenant = f"t{run_id}-one"
    event = tenant_event(tenant, f"{tenant}-evt")
    publish("tenant-created-events", event)
    publish("tenant-created-events", event)  # the same event twice

    status = wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(
        worker.get(f"/api/v1/tenants/{tenant}/provisioning-status", admin_token)), what="provisioning status")
    assert {r: s["status"] for r, s in status["resources"].items()} == dict.fromkeys(RESOURCES, "pending")
    code, quota = worker.get(f"/api/v1/tenants/{tenant}/quota", admin_token)
    assert code == 200 and quota["limits"]["cpu_cores"] > 0
    code, record = worker.get(f"/api/v1/tenants/{tenant}", admin_token)
    assert code == 200 and record["tier"] == "standard"

    commands = asyncio.run(read_topic(stream_env["KAFKA_BOOTSTRAP_SERVERS"], "provisioning-commands",
                                      lambda c: c.get("tenant_id") == tenant))
    assert sorted(c["resource"] for c in commands) == sorted(RESOURCES)  # one each, not two


def test_invalid_events_go_to_the_dead_letter_topic_and_good_ones_still_flow(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str,
) -> None:
    worker = start_worker(stream_env)
    worker.wait_ready()
    marker = f"dlq-{run_id}"
    publish("tenant-created-events", f"{{not json {marker}".encode())
    bad = tenant_event(f"t{run_id}-bad", f"{marker}-schema", tier="gold")
    publish("tenant-created-events", bad)
    publish("quota-exceeded-events", {"event_id": f"{marker}-unknown", "tenant_id": f"t{run_id}-ghost",
                                      "occurred_at": now_iso(), "resource": "gpus", "used": 3, "limit": 2})
    good = f"t{run_id}-good"
    publish("tenant-created-events", tenant_event(good, f"{good}-evt"))
    wait_for(lambda: worker.get(f"/api/v1/tenants/{good}", admin_token)[0] == 200, what="the good tenant")

    def mine(record: dict[str, Any]) -> bool:
        return marker in base64.b64decode(record["original_base64"]).decode(errors="replace")

    letters = asyncio.run(read_topic(stream_env["KAFKA_BOOTSTRAP_SERVERS"], "dead-letter-events", mine))
    reasons = {(r["source_topic"], r["reason"]) for r in letters}
    assert ("tenant-created-events", "bad-json") in reasons
    assert ("tenant-created-events", "schema") in reasons
    assert ("quota-exceeded-events", "unknown-tenant") in reasons
    schema_letter = next(r for r in letters if r["reason"] == "schema")
    assert "tier" in schema_letter["detail"]
    assert json.loads(base64.b64decode(schema_letter["original_base64"])) == bad


def metrics_sample(tenant_id: str, event_id: str, workload: str, cpu_cores: float, seconds_ago: float
                   ) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {"event_id": event_id, "tenant_id": tenant_id, "occurred_at": at.isoformat(), "workload": workload,
            "cpu_cores": cpu_cores, "memory_gib": 4.0, "gpus": 0}


def usage_cpu(worker: WorkerProcess, tenant_id: str, token: str) -> float | None:
    code, body = worker.get(f"/api/v1/tenants/{tenant_id}/quota", token)
    return float(body["usage"]["cpu_cores"]) if code == 200 else None


def test_metrics_count_each_sample_once_and_bad_samples_are_dead_lettered(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str,
) -> None:
    worker = start_worker(stream_env)
    worker.wait_ready()
    tenant = f"t{run_id}-metrics"
    publish("tenant-created-events", tenant_event(tenant, f"{tenant}-evt"))
    wait_for(lambda: worker.get(f"/api/v1/tenants/{tenant}", admin_token)[0] == 200, what="the tenant")

    samples = [
        metrics_sample(tenant, f"{tenant}-m1", "api", 1.0, seconds_ago=30),
        metrics_sample(tenant, f"{tenant}-m2", "train", 2.5, seconds_ago=25),
        metrics_sample(tenant, f"{tenant}-m3", "api", 1.5, seconds_ago=20),
    ]
    for sample in samples:
        publish("resource-metrics", sample)
    publish("resource-metrics", samples[0])  # redelivered: counted once
    publish("resource-metrics", {**metrics_sample(tenant, f"{tenant}-neg", "api", 1.0, 1), "cpu_cores": -3})
    publish("resource-metrics", metrics_sample(f"t{run_id}-nobody", f"{tenant}-ghost", "api", 1.0, 1))
    publish("resource-metrics", metrics_sample(tenant, f"{tenant}-m4", "train", 0.5, seconds_ago=10))

    def usage() -> Any:
        code, body = worker.get(f"/api/v1/tenants/{tenant}/quota", admin_token)
        return body["usage"] if code == 200 and body["usage"]["cpu_cores"] == 2.0 else None

    # the latest sample of each workload: api 1.5 (m3) + train 0.5 (m4)
    assert wait_for(usage, what="the usage totals") == {"cpu_cores": 2.0, "memory_gib": 8.0, "gpus": 0.0}

    def letters() -> list[dict[str, Any]] | None:
        found = asyncio.run(read_topic(
            stream_env["KAFKA_BOOTSTRAP_SERVERS"], "dead-letter-events", idle=1.0,
            match=lambda r: r["source_topic"] == "resource-metrics"
            and tenant in base64.b64decode(r["original_base64"]).decode()))
        return found if len(found) >= 2 else None

    dead = wait_for(letters, what="two dead letters")
    assert sorted(r["reason"] for r in dead) == ["schema", "unknown-tenant"]
    assert "cpu_cores" in next(r["detail"] for r in dead if r["reason"] == "schema")

    def exported() -> str:
        with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:  # noqa: S310 - local
            return str(response.read().decode())

    assert 'provisioning_events_duplicate_total{topic="resource-metrics"} 1.0' in exported()
    assert 'provisioning_events_processed_total{topic="resource-metrics"} 4.0' in exported()
    assert "provisioning_ready 1.0" in exported().splitlines()
    assert 'provisioning_build_info{' in exported()

    def lag_drained() -> bool:  # every sample handled and committed: nothing left behind on the topic
        return 'provisioning_consumer_lag_messages{topic="resource-metrics"} 0.0' in exported().splitlines()

    wait_for(lag_drained, what="the consumer lag of resource-metrics to be reported as 0")
    assert samples_per_workload(worker, tenant, admin_token) == {"api": 2, "train": 2}  # m1 counted once


def test_usage_back_under_the_limit_lifts_the_over_quota_mark_it_can_see(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str,
) -> None:
    worker = start_worker(stream_env)
    worker.wait_ready()
    tenant = f"t{run_id}-lift"
    publish("tenant-created-events", tenant_event(tenant, f"{tenant}-evt"))
    wait_for(lambda: worker.get(f"/api/v1/tenants/{tenant}", admin_token)[0] == 200, what="the tenant")
    limit = float(worker.get(f"/api/v1/tenants/{tenant}/quota", admin_token)[1]["limits"]["cpu_cores"])
    # A workload's sample from before the mark (the usage that set it) must not count afterwards.
    publish("resource-metrics", metrics_sample(tenant, f"{tenant}-before", "batch", limit + 5, seconds_ago=30))
    for resource, used in (("cpu_cores", limit + 5), ("storage_gib", 10_000)):
        publish("quota-exceeded-events", {"event_id": f"{tenant}-over-{resource}", "tenant_id": tenant,
                                          "occurred_at": now_iso(), "resource": resource, "used": used,
                                          "limit": limit if resource == "cpu_cores" else 1})

    def marks() -> Any:
        code, body = worker.get(f"/api/v1/tenants/{tenant}/quota", admin_token)
        return sorted(body["over_quota"]) if code == 200 else None

    wait_for(lambda: marks() == ["cpu_cores", "storage_gib"], what="both marks")
    publish("resource-metrics", metrics_sample(tenant, f"{tenant}-after", "api", limit / 2, seconds_ago=0))
    wait_for(lambda: marks() == ["storage_gib"], what="the cpu mark lifted, the storage mark kept")

    lifted = asyncio.run(read_topic(
        stream_env["KAFKA_BOOTSTRAP_SERVERS"], "provisioning-events", idle=1.0,
        match=lambda e: e.get("tenant_id") == tenant and e.get("status") == "under-quota"))
    assert [(e["resource"], e["detail"]["used"], e["detail"]["lifted_by"]) for e in lifted] == [
        ("cpu_cores", limit / 2, "usage")]

    # The storage mark only an admin lifts: through the tenant's owner, announced, the quota unchanged.
    code, body = delete(worker, f"/api/v1/tenants/{tenant}/quota/over-quota/storage_gib", admin_token)
    assert code == 202, body
    wait_for(lambda: marks() == [], what="the storage mark lifted by the admin")
    assert float(worker.get(f"/api/v1/tenants/{tenant}/quota", admin_token)[1]["limits"]["cpu_cores"]) == limit
    by_admin = wait_for(lambda: asyncio.run(read_topic(
        stream_env["KAFKA_BOOTSTRAP_SERVERS"], "provisioning-events", idle=1.0,
        match=lambda e: e.get("tenant_id") == tenant and e.get("status") == "under-quota"
        and e.get("detail", {}).get("lifted_by") == "admin")), what="the admin lift announced")
    assert [(e["resource"], e["detail"]["used"]) for e in by_admin] == [("storage_gib", 10_000)]
    code, body = delete(worker, f"/api/v1/tenants/{tenant}/quota/over-quota/storage_gib", admin_token)
    assert code == 404 and body["code"] == "over-quota-mark-not-found", body


def test_a_critical_anomaly_quarantines_its_workload_until_an_admin_releases_it(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str,
) -> None:
    worker = start_worker(stream_env)
    worker.wait_ready()
    tenant = f"t{run_id}-quar"
    publish("tenant-created-events", tenant_event(tenant, f"{tenant}-evt"))
    wait_for(lambda: worker.get(f"/api/v1/tenants/{tenant}", admin_token)[0] == 200, what="the tenant")
    publish("resource-anomaly-events", {
        "event_id": f"{tenant}-anomaly", "tenant_id": tenant, "occurred_at": now_iso(), "resource_type": "deployment",
        "resource_id": "api", "anomaly_type": "egress-spike", "severity": "critical", "value": 9.0})

    def reactions(status: str) -> list[dict[str, Any]]:
        return asyncio.run(read_topic(
            stream_env["KAFKA_BOOTSTRAP_SERVERS"], "provisioning-events", idle=1.0,
            match=lambda e: e.get("tenant_id") == tenant and e.get("kind") == "anomaly-reaction"
            and e.get("status") == status))

    wait_for(lambda: reactions("quarantine"), what="the quarantine announced")
    code, body = delete(worker, f"/api/v1/tenants/{tenant}/quarantine/api", admin_token)
    assert code == 202, body
    [released] = wait_for(lambda: reactions("released"), what="the release announced")
    assert released["resource"] == "api" and released["detail"]["released_by"] == "admin"
    wait_for(lambda: delete(worker, f"/api/v1/tenants/{tenant}/quarantine/api", admin_token)[0] == 404,
             what="the workload no longer quarantined")


def delete(worker: WorkerProcess, path: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL built here
        f"{worker.url}{path}", method="DELETE", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def samples_per_workload(worker: WorkerProcess, tenant_id: str, token: str) -> dict[str, int]:
    """How many samples the tenant's recent utilization windows count, per workload."""
    code, body = worker.get(f"/api/v1/tenants/{tenant_id}/utilization", token)
    assert code == 200, body
    return {workload: sum(w["samples"] for w in windows) for workload, windows in body["workloads"].items()}


def test_kill_minus_nine_loses_nothing_and_duplicates_nothing(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str, tmp_path: Any,
) -> None:
    worker = start_worker(stream_env, data_dir=tmp_path / "kill-data")
    worker.wait_ready()
    tenants = [f"t{run_id}-k{i}" for i in range(150)]
    tiers = ("free", "standard", "enterprise")
    for i, tenant in enumerate(tenants):
        publish("tenant-created-events", tenant_event(tenant, f"{tenant}-evt", tiers[i % 3]))
        if i == 60:
            worker.kill()  # while events stream in
    port = worker.port
    restarted = start_worker(stream_env, port=port, data_dir=tmp_path / "kill-data")
    restarted.wait_ready()
    # every event sent twice more: redelivery must not duplicate anything
    for tenant in tenants[:20]:
        publish("tenant-created-events", tenant_event(tenant, f"{tenant}-evt"))

    def all_there() -> bool:
        code, page = restarted.get("/api/v1/tenants?limit=200&offset=0", admin_token)
        return code == 200 and {t["tenant_id"] for t in page["items"]} >= set(tenants)

    wait_for(all_there, timeout=300, what="all tenants after the restart")
    for i, tenant in enumerate(tenants):
        code, record = restarted.get(f"/api/v1/tenants/{tenant}", admin_token)
        assert code == 200 and record["tier"] == tiers[i % 3]

    commands = asyncio.run(read_topic(stream_env["KAFKA_BOOTSTRAP_SERVERS"], "provisioning-commands",
                                      lambda c: c.get("tenant_id", "").startswith(f"t{run_id}-k")))
    distinct = {(c["tenant_id"], c["resource"]): c["command_id"] for c in commands}
    assert set(distinct) == {(t, r) for t in tenants for r in RESOURCES}  # nothing lost
    ids_per_key: dict[tuple[str, str], set[str]] = {}
    for c in commands:
        ids_per_key.setdefault((c["tenant_id"], c["resource"]), set()).add(c["command_id"])
    assert all(len(ids) == 1 for ids in ids_per_key.values())  # a redelivered command keeps its id


def test_two_workers_both_answer_for_every_tenant(
    stream_env: dict[str, str], start_worker: Callable[..., WorkerProcess], publish: Callable[[str, Any], None],
    admin_token: str, run_id: str,
) -> None:
    first = start_worker(stream_env)
    second = start_worker(stream_env)
    first.wait_ready()
    second.wait_ready()
    tenants = [f"t{run_id}-w{i}" for i in range(12)]
    for tenant in tenants:
        publish("tenant-created-events", tenant_event(tenant, f"{tenant}-evt"))
    for worker in (first, second):
        for tenant in tenants:
            wait_for(lambda w=worker, t=tenant: w.get(f"/api/v1/tenants/{t}/quota", admin_token)[0] == 200,
                     what=f"{tenant} on {worker.url}")
        code, page = worker.get("/api/v1/tenants?limit=200", admin_token)
        assert code == 200 and {t["tenant_id"] for t in page["items"]} >= set(tenants)

    # Usage written by whichever worker owns each tenant (batched, per source partition) reads the same from both.
    for i, tenant in enumerate(tenants):
        publish("resource-metrics", metrics_sample(tenant, f"{tenant}-m", "api", float(i + 1), seconds_ago=5))
    for worker in (first, second):
        for i, tenant in enumerate(tenants):
            wait_for(lambda w=worker, t=tenant, cpu=float(i + 1): usage_cpu(w, t, admin_token) == cpu,
                     what=f"the usage of {tenant} on {worker.url}")
            assert samples_per_workload(worker, tenant, admin_token) == {"api": 1}
