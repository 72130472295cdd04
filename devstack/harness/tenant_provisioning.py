"""Support of ``test_tenant_provisioning.py`` and ``bench/provisioning_latency.py``: an isolated event plane,
a worker with the executor on, its REST API, and every backend read with that backend's own client.

**Why an isolated event plane.** The shared local Kafka keeps every event other runs published (hundreds of
``tenant-created-events``, thousands of ``provisioning-commands``), and a worker with a fresh ``APP_ID`` reads
its input topics from the beginning (``consumer_auto_offset_reset="earliest"``). With the executor on, such a
worker would provision every tenant any earlier run ever created, in every shared backend, and so would a
concurrent run's worker provision ours. So these tests and the benchmark run their own Kafka broker (the
stack's Kafka service on free ports, with a fresh data directory) and their own Pulsar namespace
(``PULSAR_NAMESPACE``), while the seven backends are the shared local servers: every tenant id carries the
run's random id, and everything is purged at the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulsar
from aiokafka import AIOKafkaConsumer
from cassandra.cluster import Cluster, NoHostAvailable, Session
from elasticsearch import Elasticsearch, NotFoundError
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from minio import Minio
from pyignite import Client as IgniteClient

from devstack import process
from devstack.base import Service, StackContext, progress
from devstack.harness.worker import free_port
from devstack.kafka import Kafka
from pipeline.config import Settings
from pipeline.provisioners.base import RESOURCES, TenantSpec
from pipeline.provisioners.registry import aclose_all, build_provisioners
from pipeline.provisioners.s3 import lifecycle_settings

#: The services the executor talks to (``etcd`` comes with ``kubernetes``).
BACKEND_SERVICES: tuple[str, ...] = (
    "cassandra", "s3", "pulsar", "openproject", "ignite", "elasticsearch", "kubernetes",
)




# -- the isolated event plane ----------------------------------------------------------------------------------


def _pulsar_admin(admin_url: str, method: str, path: str) -> int:
    request = urllib.request.Request(f"{admin_url.rstrip('/')}/admin/v2{path}", method=method,  # noqa: S310
                                     data=b"{}" if method == "PUT" else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - local admin URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class EventPlane:
    """A Kafka broker of our own and a Pulsar namespace of our own (the bridge's inputs and outputs)."""

    kafka: Service
    ctx: StackContext
    pulsar_url: str
    pulsar_admin_url: str
    namespace: str

    @classmethod
    def start(cls, cache_dir: Path, home: Path, pulsar_exports: dict[str, str]) -> EventPlane:
        ctx = StackContext(cache_dir=cache_dir, home=home)
        kafka = Kafka(free_port(), free_port(), name=f"kafka-e2e-{secrets.token_hex(3)}")
        kafka.install(ctx)
        kafka.start(ctx)
        namespace = f"public/e2e-{secrets.token_hex(4)}"
        plane = cls(kafka, ctx, pulsar_exports["PULSAR_URL"], pulsar_exports["PULSAR_ADMIN_URL"], namespace)
        status = _pulsar_admin(plane.pulsar_admin_url, "PUT", f"/namespaces/{namespace}")
        if status not in (200, 204, 409):
            plane.stop()
            raise RuntimeError(f"could not create the Pulsar namespace {namespace}: HTTP {status}")
        return plane

    @property
    def bootstrap(self) -> str:
        return self.kafka.exports(self.ctx)["KAFKA_BOOTSTRAP_SERVERS"]

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PULSAR_URL": self.pulsar_url,
            "PULSAR_ADMIN_URL": self.pulsar_admin_url,
            "PULSAR_NAMESPACE": self.namespace,
        }

    def kafka_log_tail(self, lines: int = 40) -> str:
        return process.log_tail(self.ctx.log_path(self.kafka.name), lines)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            _pulsar_admin(self.pulsar_admin_url, "DELETE", f"/namespaces/{self.namespace}?force=true")
        progress("e2e", f"stopping the isolated Kafka at {self.bootstrap}")
        self.kafka.stop(self.ctx)


class Publisher:
    """Publishes platform events on the plane's Pulsar namespace (where the worker's bridge reads them)."""

    def __init__(self, plane: EventPlane) -> None:
        self._namespace = plane.namespace
        self._client = pulsar.Client(plane.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
        self._producers: dict[str, pulsar.Producer] = {}

    def send(self, topic: str, event: Any) -> None:
        if topic not in self._producers:
            self._producers[topic] = self._client.create_producer(f"persistent://{self._namespace}/{topic}")
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        self._producers[topic].send(payload)

    def close(self) -> None:
        self._client.close()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def tenant_created(tenant_id: str, tier: str = "standard", event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or f"{tenant_id}-created", "tenant_id": tenant_id, "occurred_at": now_iso(),
            "name": f"E2E tenant {tenant_id}", "tier": tier, "owner_user_id": f"{tenant_id}-owner@example.com"}


def tenant_deleted(tenant_id: str, purge: bool, event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or f"{tenant_id}-deleted", "tenant_id": tenant_id, "occurred_at": now_iso(),
            "purge": purge}


#: The workers' SNAPSHOT_SIGNING_KEY in the integration tests (required while forecasting is on).
SNAPSHOT_SIGNING_KEY = "integration-test-snapshot-signing-key"


def executor_env(backends: dict[str, str], plane: EventPlane, jwt_secret: str, **overrides: str) -> dict[str, str]:
    """A worker with the executor on, pointed at the shared backends and at the isolated event plane."""
    return {
        **backends,
        **plane.env(),
        "APP_ID": f"e2e-{secrets.token_hex(4)}",
        "BRIDGE_SUBSCRIPTION": f"e2e-bridge-{secrets.token_hex(4)}",
        "JWT_SECRET": jwt_secret,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY,
        "STORE": "rocksdb://",
        "EXECUTOR_ENABLED": "true",
        **overrides,
    }


async def _read_records(bootstrap: str, topic: str, until: Callable[[list[dict[str, Any]]], bool],
                        seconds: float) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not until(found):
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(record.value))
        return found
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, until: Callable[[list[dict[str, Any]]], bool] | None = None,
               timeout: float = 10.0) -> list[dict[str, Any]]:
    """The JSON records of ``topic`` from the beginning: until ``until(records)`` holds, or for ``timeout``
    seconds (every record written so far, when ``until`` is None)."""
    return asyncio.run(_read_records(bootstrap, topic, until or (lambda _: False), timeout))


# -- the REST API of a worker --------------------------------------------------------------------------------


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/") + "/api/v1"
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers={  # noqa: S310
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local worker
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except OSError as exc:
            return 0, {"error": str(exc)}

    def status(self, tenant_id: str) -> dict[str, Any] | None:
        code, body = self.call("GET", f"/tenants/{tenant_id}/provisioning-status")
        return body if code == 200 and isinstance(body, dict) else None

    def states(self, tenant_id: str) -> dict[str, str]:
        status = self.status(tenant_id) or {}
        return {name: entry["status"] for name, entry in status.get("resources", {}).items()}

    def all_ready(self, tenant_id: str) -> dict[str, Any] | None:
        status = self.status(tenant_id)
        if status and set(status["resources"]) == set(RESOURCES) and status["overall"] == "ready":
            return status
        return None


# -- every backend, read with its own client -----------------------------------------------------------------


def settings_from(exports: dict[str, str]) -> Settings:
    return Settings(**{key.lower(): value for key, value in exports.items()})  # type: ignore[arg-type]


@dataclass
class Backends:
    """Each backend's own client: what exists, with which settings (None when absent)."""

    settings: Settings
    _cassandra: tuple[Cluster, Session] | None = field(default=None, init=False)
    _ignite: IgniteClient | None = field(default=None, init=False)
    _k8s: k8s.ApiClient | None = field(default=None, init=False)

    # cassandra-driver
    def cassandra(self) -> Session:
        if self._cassandra is None:
            cluster = Cluster(self.settings.cassandra_host_list, port=self.settings.cassandra_port,
                              connect_timeout=10, protocol_version=5)
            self._cassandra = (cluster, cluster.connect())
        return self._cassandra[1]

    def cql(self, query: str, parameters: tuple[Any, ...] = ()) -> Any:
        """Run ``query``; a session that lost the server (the outage test restarts it) is made again once."""
        try:
            return self.cassandra().execute(query, parameters)
        except NoHostAvailable:
            if self._cassandra is not None:
                self._cassandra[0].shutdown()
                self._cassandra = None
            return self.cassandra().execute(query, parameters)

    def keyspace(self, name: str) -> dict[str, Any] | None:
        row = self.cql(
            "SELECT replication, durable_writes FROM system_schema.keyspaces WHERE keyspace_name = %s", (name,)
        ).one()
        if row is None:
            return None
        replication = dict(row.replication)
        replication["class"] = replication["class"].rsplit(".", 1)[-1]
        return {"replication": replication, "durable_writes": row.durable_writes}

    def keyspaces(self) -> list[str]:
        rows = self.cql("SELECT keyspace_name FROM system_schema.keyspaces")
        return [row.keyspace_name for row in rows]

    # minio
    def minio(self) -> Minio:
        s = self.settings
        return Minio(s.minio_endpoint, access_key=s.minio_access_key,
                     secret_key=s.minio_secret_key.get_secret_value(), secure=s.minio_secure)

    def bucket(self, name: str) -> dict[str, Any] | None:
        client = self.minio()
        if not client.bucket_exists(name):
            return None
        tags = client.get_bucket_tags(name)
        return {"versioning": client.get_bucket_versioning(name).status,
                "lifecycle": lifecycle_settings(client.get_bucket_lifecycle(name)),
                "tags": dict(tags) if tags else {}}

    def buckets(self) -> list[str]:
        return [bucket.name for bucket in self.minio().list_buckets()]

    # Pulsar admin REST
    def pulsar(self, path: str) -> tuple[int, Any]:
        url = self.settings.pulsar_admin_url.rstrip("/") + "/admin/v2" + path
        try:
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - local admin URL
                text = response.read()
                return int(response.status), json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def pulsar_tenants(self) -> list[str]:
        status, tenants = self.pulsar("/tenants")
        assert status == 200, status
        return list(tenants)

    def pulsar_namespace(self, tenant: str, namespace: str) -> dict[str, Any] | None:
        status, info = self.pulsar(f"/tenants/{tenant}")
        if status != 200:
            return None
        _, namespaces = self.pulsar(f"/namespaces/{tenant}")
        if namespace not in (namespaces or []):
            return {"allowed_clusters": info.get("allowedClusters"), "namespaces": namespaces}
        _, retention = self.pulsar(f"/namespaces/{namespace}/retention")
        _, backlog = self.pulsar(f"/namespaces/{namespace}/backlogQuotaMap")
        _, ttl = self.pulsar(f"/namespaces/{namespace}/messageTTL")
        quota = (backlog or {}).get("destination_storage") or {}
        return {"allowed_clusters": info.get("allowedClusters"), "namespaces": namespaces,
                "retention": retention,
                "backlog_quota": {key: quota.get(key) for key in ("limitSize", "limitTime", "policy")},
                "message_ttl_seconds": ttl}

    # OpenProject API v3 (the stand-in locally)
    def openproject(self, path: str) -> tuple[int, Any]:
        key = self.settings.openproject_api_key.get_secret_value()
        token = base64.b64encode(f"apikey:{key}".encode()).decode()
        request = urllib.request.Request(self.settings.openproject_url.rstrip("/") + "/api/v3" + path,  # noqa: S310
                                         headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local server
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def projects(self) -> list[dict[str, Any]]:
        status, body = self.openproject("/projects?pageSize=10000")
        assert status == 200, status
        elements: list[dict[str, Any]] = body["_embedded"]["elements"]
        return elements

    def projects_named(self, identifier: str) -> list[dict[str, Any]]:
        return [p for p in self.projects() if p["identifier"] == identifier]

    # pyignite
    def ignite(self) -> IgniteClient:
        if self._ignite is None:
            client = IgniteClient(timeout=30)
            client.connect(self.settings.ignite_host, self.settings.ignite_port)
            self._ignite = client
        return self._ignite

    def caches(self) -> list[str]:
        return list(self.ignite().get_cache_names())

    def cache(self, name: str) -> dict[int, Any] | None:
        if name not in self.caches():
            return None
        settings: dict[int, Any] = self.ignite().get_cache(name).settings
        return settings

    # elasticsearch
    def elasticsearch(self) -> Elasticsearch:
        return Elasticsearch(self.settings.elasticsearch_host, request_timeout=30)

    def index(self, name: str) -> dict[str, Any] | None:
        with self.elasticsearch() as es:
            try:
                body: dict[str, Any] = es.indices.get(index=name).body[name]
            except NotFoundError:
                return None
            return body

    def indices(self) -> list[str]:
        with self.elasticsearch() as es:
            return list(es.indices.get(index="*", expand_wildcards="all").body)

    # kubernetes
    def kube(self) -> k8s.ApiClient:
        if self._k8s is None:
            self._k8s = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.settings.kubeconfig), persist_config=False)
        return self._k8s

    def plain(self, obj: object) -> dict[str, Any]:
        result: dict[str, Any] = self.kube().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return result

    def namespace(self, name: str) -> dict[str, Any] | None:
        try:
            return self.plain(k8s.CoreV1Api(self.kube()).read_namespace(name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def namespace_gone(self, name: str) -> bool:
        """Deleted: absent, or Terminating (the local stack runs no controller-manager to finish it)."""
        ns = self.namespace(name)
        return ns is None or bool(ns["metadata"].get("deletionTimestamp"))

    def namespaces(self) -> list[str]:
        items = self.plain(k8s.CoreV1Api(self.kube()).list_namespace()).get("items", [])
        return [item["metadata"]["name"] for item in items]

    def namespaced(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        api = self.kube()
        core, net, rbac = k8s.CoreV1Api(api), k8s.NetworkingV1Api(api), k8s.RbacAuthorizationV1Api(api)
        listers: dict[str, Callable[[str], object]] = {
            "ResourceQuota": core.list_namespaced_resource_quota,
            "LimitRange": core.list_namespaced_limit_range,
            "NetworkPolicy": net.list_namespaced_network_policy,
            "RoleBinding": rbac.list_namespaced_role_binding,
        }
        items: list[dict[str, Any]] = self.plain(listers[kind](namespace)).get("items", [])
        return items

    def close(self) -> None:
        if self._cassandra is not None:
            self._cassandra[0].shutdown()
            self._cassandra = None
        if self._ignite is not None:
            with contextlib.suppress(Exception):
                self._ignite.close()
            self._ignite = None
        if self._k8s is not None:
            self._k8s.close()  # type: ignore[no-untyped-call]
            self._k8s = None


def names_in_backends(backends: Backends) -> dict[str, list[str]]:
    """Every name each backend lists (keyspaces, buckets, Pulsar tenants, projects, caches, indices, namespaces)."""
    return {
        "cassandra": backends.keyspaces(),
        "s3": backends.buckets(),
        "pulsar": backends.pulsar_tenants(),
        "openproject": [p["identifier"] for p in backends.projects()],
        "ignite": backends.caches(),
        "elasticsearch": backends.indices(),
        "kubernetes": backends.namespaces(),
    }


def purge_tenants(settings: Settings, tenants: list[TenantSpec]) -> list[str]:
    """Delete every resource of ``tenants`` with purge, directly through the provisioners; the errors."""

    async def run() -> list[str]:
        provisioners = build_provisioners(settings)
        errors: list[str] = []
        try:
            for tenant in tenants:
                for resource in reversed(RESOURCES):
                    try:
                        await provisioners[resource].delete(tenant, purge=True)
                    except Exception as exc:  # cleanup goes on with the next resource
                        errors.append(f"{tenant.tenant_id}/{resource}: {exc}")
        finally:
            await aclose_all(provisioners)
        return errors

    return asyncio.run(run())


@contextlib.contextmanager
def stopped_service(name: str, ctx: StackContext) -> Iterator[Service]:
    """Stop the local ``name`` server (started by this stack) for the body, then always start it again."""
    from devstack import stack

    service = stack.load(name)
    if not service.stop(ctx):
        raise RuntimeError(f"{name} was not started by the stack at {ctx.home}; it cannot be stopped here")
    try:
        yield service
    finally:
        service.start(ctx)
