"""Support of ``test_scaling_engine.py`` and ``bench/scaling_agent.py``: a Kafka broker of their own, events with
event-time timestamps, tenants' namespaces and Deployments on the real kube-apiserver, the REST API.

**Why a Kafka broker of its own.** Every worker started from this tree (other tests, the stream benchmarks)
reads the shared local Kafka's topics with its own consumer group, from the beginning: it would take our
tenants, policies and metrics in too (and we theirs: the shared ``resource-metrics`` holds hundreds of
thousands of benchmark samples). The stack's Kafka service on free ports with a fresh data directory keeps
the runs apart; the kube-apiserver is the shared one (every tenant id carries the run's random id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from devstack.base import StackContext, progress
from devstack.harness.worker import free_port
from devstack.kafka import Kafka
from pipeline.provisioners.naming import names_for

# -- a Kafka broker of our own -----------------------------------------------------------------------------


@dataclass
class Broker:
    """The stack's Kafka service (same jars, same settings) on free ports, under a state directory of its own."""

    kafka: Kafka
    ctx: StackContext

    @classmethod
    def start(cls, cache_dir: Path, home: Path) -> Broker:
        ctx = StackContext(cache_dir=cache_dir, home=home)
        kafka = Kafka(free_port(), free_port(), name=f"kafka-scaling-{secrets.token_hex(3)}")
        kafka.install(ctx)
        kafka.start(ctx)
        return cls(kafka, ctx)

    @property
    def bootstrap(self) -> str:
        return self.kafka.address(self.ctx)

    def stop(self) -> None:
        progress("scaling", f"stopping the isolated Kafka at {self.bootstrap}")
        self.kafka.stop(self.ctx)


# -- records -------------------------------------------------------------------------------------------------


Record = tuple[str, dict[str, Any], datetime | None]


async def _produce(bootstrap: str, topic: str, records: Iterable[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = []
        for key, value, at in records:
            timestamp = int(at.timestamp() * 1000) if at is not None else None
            futures.append(await producer.send(topic, json.dumps(value).encode(), key=key.encode(),
                                               timestamp_ms=timestamp))
        for future in futures:
            await future
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> None:
    """Send ``(key, JSON value, event time)`` records; the event time becomes the Kafka timestamp (as the bridge
    does with ``occurred_at``)."""
    asyncio.run(_produce(bootstrap, topic, list(records)))


async def _read(bootstrap: str, topic: str, seconds: float) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if not batches and found:
                break
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(record.value))
        return found
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, seconds: float = 10.0) -> list[dict[str, Any]]:
    """Every JSON record of ``topic`` from the beginning (reading stops at the first idle second)."""
    return asyncio.run(_read(bootstrap, topic, seconds))


def tenant_created(tenant_id: str, tier: str = "standard") -> Record:
    event = {"event_id": f"{tenant_id}-created", "tenant_id": tenant_id, "occurred_at": datetime.now(UTC).isoformat(),
             "name": f"Scaling tenant {tenant_id}", "tier": tier, "owner_user_id": f"{tenant_id}-owner"}
    return tenant_id, event, None


def metric(tenant_id: str, workload: str, at: datetime, cpu_cores: float, gpus: float = 0.0) -> Record:
    event = {"event_id": f"{tenant_id}-{workload}-{at.isoformat()}", "tenant_id": tenant_id,
             "occurred_at": at.isoformat(), "workload": workload, "cpu_cores": round(cpu_cores, 4),
             "memory_gib": 1.0, "gpus": gpus}
    return tenant_id, event, at


def samples(tenant_id: str, workload: str, start: datetime, end: datetime, load: Callable[[datetime], float],
            step: timedelta) -> list[Record]:
    """Samples every ``step`` from ``start`` to ``end`` (both included) of ``load(at)`` CPU cores."""
    records: list[Record] = []
    at = start
    while at <= end:
        records.append(metric(tenant_id, workload, at, load(at)))
        at += step
    return records


def run_id() -> str:
    return secrets.token_hex(3)


# -- the kube-apiserver --------------------------------------------------------------------------------------


class Cluster:
    """Tenants' namespaces and Deployments on the real kube-apiserver (nothing runs there: no controllers)."""

    def __init__(self, kubeconfig: str) -> None:
        self.api = k8s_config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)
        self.namespaces: list[str] = []

    def deployment(self, tenant_id: str, name: str, replicas: int = 1, cpu: str = "1", memory: str = "1Gi",
                   gpus: int | None = None) -> None:
        namespace = names_for(tenant_id).kubernetes_namespace
        with contextlib.suppress(ApiException):
            body: Any = {"metadata": {"name": namespace, "labels": {"scaling-test": "true"}}}  # the client takes dicts
            self.core.create_namespace(body)
            self.namespaces.append(namespace)
        requests: dict[str, str] = {"cpu": cpu, "memory": memory}
        limits: dict[str, str] = {}
        if gpus is not None:
            requests["nvidia.com/gpu"] = str(gpus)
            limits["nvidia.com/gpu"] = str(gpus)
        deployment: Any = {
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                    {"name": name, "image": "registry.invalid/app:1",
                     "resources": {"requests": requests, **({"limits": limits} if limits else {})}}]}},
            },
        }
        self.apps.create_namespaced_deployment(namespace, deployment)

    def replicas(self, tenant_id: str, name: str) -> int:
        scale = self.apps.read_namespaced_deployment_scale(name, names_for(tenant_id).kubernetes_namespace)
        assert scale.spec is not None and scale.spec.replicas is not None
        return int(scale.spec.replicas)

    def cleanup(self) -> None:
        for namespace in self.namespaces:
            with contextlib.suppress(ApiException):
                self.core.delete_namespace(namespace)
        self.api.close()  # type: ignore[no-untyped-call]


# -- the REST API ---------------------------------------------------------------------------------------------


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - a local worker
            f"{self.base_url}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def decisions(self, tenant_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        status, body = self.call("GET", f"/api/v1/scaling/decisions?tenant_id={tenant_id}&limit={limit}")
        if status != 200:
            return []
        items: list[dict[str, Any]] = body["items"]
        return items

    def policies(self, tenant_id: str) -> list[dict[str, Any]]:
        status, body = self.call("GET", f"/api/v1/scaling/policies?tenant_id={tenant_id}")
        return list(body["items"]) if status == 200 else []

    def metric_value(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


class EventStream(threading.Thread):
    """The dashboard's server-sent events (``/ui/events``), collected in the background as (event, data)."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(daemon=True, name="dashboard-events")
        self.url = f"{base_url.rstrip('/')}/ui/events?access_token={token}"
        self.events: list[tuple[str, Any]] = []
        self.connected = threading.Event()
        self._response: Any = None

    def run(self) -> None:
        with contextlib.suppress(Exception), urllib.request.urlopen(self.url, timeout=600) as response:  # noqa: S310
            self._response = response
            name = "message"
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: "):
                    self.events.append((name, json.loads(line[len("data: "):])))
                    if name == "snapshot":
                        self.connected.set()

    def close(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
