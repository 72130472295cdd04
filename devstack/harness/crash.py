"""The crash loop: tenant events through Pulsar while the worker is killed with SIGKILL and restarted.

Shared by ``test_crash_loop.py`` (a short run in ``make test``) and ``bench/crash_loop.py`` (the long run whose
figures the docs quote). The ground truth is what was published: every tenant-created event must end in the
tenant's record and its provisioning commands, whatever moment the worker died at, and no command may be
emitted twice with different ids.

Events go through the worker's own bridge (Pulsar acknowledged after Kafka acknowledged), so a kill also
lands between a bridge's Kafka write and its Pulsar acknowledgement: the redelivered copy is a duplicate that
the agents must absorb without acknowledging past an event still in flight.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack.harness.tenant_provisioning import EventPlane, Publisher, read_topic, tenant_created
from devstack.harness.worker import WorkerProcess, free_port, poll
from pipeline.contract.topics import PROVISIONING_COMMANDS, TENANT_CREATED
from pipeline.provisioners.base import RESOURCES


@dataclass
class CrashLoopReport:
    kills: int = 0
    events_sent: int = 0
    backlog_events: int = 0
    lost: list[str] = field(default_factory=list)
    #: For each lost tenant: the resources whose commands were found, and the reasons of its dead letters.
    lost_detail: dict[str, Any] = field(default_factory=dict)
    missing_records: list[str] = field(default_factory=list)
    duplicated_commands: list[str] = field(default_factory=list)
    converge_seconds: float | None = None
    restart_to_ready_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ready = sorted(self.restart_to_ready_seconds)
        return {
            "kills": self.kills,
            "events_sent": self.events_sent,
            "backlog_events": self.backlog_events,
            "events_lost": len(self.lost),
            "tenant_records_missing": len(self.missing_records),
            "duplicated_side_effects": len(self.duplicated_commands),
            "converge_seconds_after_last_kill": self.converge_seconds,
            "restart_to_ready_seconds_median": ready[len(ready) // 2] if ready else None,
            "restart_to_ready_seconds_max": ready[-1] if ready else None,
        }


async def _preload(bootstrap: str, partitions: int, events: list[tuple[str, bytes]]) -> None:
    """Write ``events`` straight into Kafka's tenant-created topic (history a fresh consumer group replays)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = await admin.list_topics()
        if TENANT_CREATED not in existing:
            await admin.create_topics([NewTopic(TENANT_CREATED, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in events:
            await producer.send(TENANT_CREATED, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


def preload_history(plane: EventPlane, count: int, run: str, partitions: int = 4) -> list[str]:
    """``count`` tenant-created events already in Kafka, with what history holds besides: every 7th event
    twice (a bridge redelivery) and an invalid record every 11th (a dead letter). Both are acknowledged at
    once while the events before them may still be in flight."""
    records: list[tuple[str, bytes]] = []
    tenants: list[str] = []
    for i in range(count):
        event = tenant_created(f"old-{run}-{i}")
        tenants.append(event["tenant_id"])
        records.append((event["tenant_id"], json.dumps(event).encode()))
        if i % 7 == 3:
            records.append((event["tenant_id"], json.dumps(event).encode()))
        if i % 11 == 5:
            records.append((event["tenant_id"], b'{"event_id": "not a tenant event"'))
    asyncio.run(_preload(plane.bootstrap, partitions, records))
    return tenants


def commands_by_tenant(records: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """tenant -> Counter of (resource/action/command id) for the provisioning commands in ``records``."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        if isinstance(record, dict) and "tenant_id" in record and "resource" in record:
            key = f"{record.get('resource')}/{record.get('action')}/{record.get('command_id')}"
            found[record["tenant_id"]][key] += 1
    return found


class Killer:
    """Kills the worker ``kills`` times, each ``delay`` seconds after it answered /ready, and restarts it."""

    def __init__(self, worker: WorkerProcess, kills: int, delay: tuple[float, float], seed: int,
                 ready_timeout: float = 180) -> None:
        self.worker = worker
        self.kills = kills
        self.delay = delay
        self.random = random.Random(seed)
        self.ready_timeout = ready_timeout
        self.done = 0
        self.ready_seconds: list[float] = []
        self.last_kill_at: float | None = None

    def run(self, stop: threading.Event) -> None:
        self.worker.wait_ready(self.ready_timeout)
        while self.done < self.kills and not stop.is_set():
            time.sleep(self.random.uniform(*self.delay))
            self.worker.kill()
            self.last_kill_at = time.monotonic()
            self.done += 1
            self.worker.start()
            started = time.monotonic()
            self.worker.wait_ready(self.ready_timeout)
            self.ready_seconds.append(time.monotonic() - started)


def tenant_exists(worker: WorkerProcess, token: str, tenant_id: str) -> bool:
    status, _ = worker.get(f"/api/v1/tenants/{tenant_id}", token)
    return status == 200


def run_crash_loop(
    plane: EventPlane,
    start_worker: Callable[..., WorkerProcess],
    env: dict[str, str],
    token: str,
    *,
    backlog: int,
    events: int,
    rate: float,
    kills: int,
    delay: tuple[float, float] = (1.5, 3.5),
    converge_timeout: float = 300,
    seed: int = 7,
) -> CrashLoopReport:
    """Publish ``events`` tenant-created events at ``rate``/s through Pulsar while killing the worker ``kills``
    times; then wait until every tenant converged (its 7 commands on Kafka, its record through the API)."""
    run = secrets.token_hex(3)
    report = CrashLoopReport(backlog_events=backlog)
    old = preload_history(plane, backlog, run) if backlog else []
    port = free_port()
    worker = start_worker(env, port=port)
    killer = Killer(worker, kills, delay, seed)
    stop = threading.Event()
    kill_thread = threading.Thread(target=killer.run, args=(stop,), daemon=True)
    kill_thread.start()
    publisher = Publisher(plane)
    new = [f"new-{run}-{i}" for i in range(events)]
    try:
        for tenant_id in new:
            publisher.send(TENANT_CREATED, tenant_created(tenant_id))
            report.events_sent += 1
            time.sleep(1 / rate)
    finally:
        publisher.close()
    kill_thread.join(timeout=kills * 200 + 60)
    stop.set()
    report.kills = killer.done
    report.restart_to_ready_seconds = killer.ready_seconds
    worker.wait_ready(180)
    wanted = set(old) | set(new)
    settled_from = killer.last_kill_at or time.monotonic()

    def converged() -> dict[str, Counter[str]] | None:
        found = commands_by_tenant(read_topic(plane.bootstrap, PROVISIONING_COMMANDS, timeout=5))
        complete = {t for t in wanted if len({k.split("/")[0] for k in found.get(t, {})}) >= len(RESOURCES)}
        return found if complete == wanted else None

    result = poll(converged, converge_timeout, interval=2.0)
    found = result or commands_by_tenant(read_topic(plane.bootstrap, PROVISIONING_COMMANDS, timeout=5))
    if result is not None:
        report.converge_seconds = round(time.monotonic() - settled_from, 1)
    report.lost = sorted(t for t in wanted if len({k.split("/")[0] for k in found.get(t, {})}) < len(RESOURCES))
    if report.lost:
        dead = read_topic(plane.bootstrap, env.get("DEAD_LETTER_TOPIC", "dead-letter-events"), timeout=5)
        for tenant_id in report.lost:
            report.lost_detail[tenant_id] = {
                "resources": sorted({k.split("/")[0] for k in found.get(tenant_id, {})}),
                "dead_letters": [d.get("reason") for d in dead if tenant_id in str(d.get("key"))],
                "record": tenant_exists(worker, token, tenant_id),
            }
    # A side effect is duplicated when one tenant got two different command ids for one resource and action.
    for tenant_id, counts in found.items():
        per_action: Counter[str] = Counter("/".join(key.split("/")[:2]) for key in counts)
        report.duplicated_commands += [f"{tenant_id}:{k}" for k, n in per_action.items() if n > 1]
    report.missing_records = [t for t in new if not tenant_exists(worker, token, t)]
    return report


def worker_log_tails(tmp: Path, lines: int = 40) -> str:
    from devstack.process import log_tail

    return "\n".join(f"== {log}\n{log_tail(log, lines)}" for log in sorted(tmp.glob("worker-*.log")))
