"""Tenant provisioning end to end (issue 4, "Done when"): events on Pulsar, a real worker with the executor on,
the seven real backends, each checked with its own client, and the REST API.

One worker serves the whole module (``RECONCILE_INTERVAL_SECONDS=3``, fast retries); its Kafka and Pulsar
namespace are its own (see ``tenant_provisioning_support``). Tenant ids are unique to the run; every tenant
the module created is purged from every backend at the end.
"""

from __future__ import annotations

import base64
import io
import re
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s
from minio.deleteobjects import DeleteObject
from pyignite.datatypes.cache_config import CacheAtomicityMode, CacheMode
from pyignite.datatypes.prop_codes import (
    PROP_BACKUPS_NUMBER,
    PROP_CACHE_ATOMICITY_MODE,
    PROP_CACHE_MODE,
    PROP_GROUP_NAME,
)

from devstack.base import StackContext
from devstack.harness.tenant_provisioning import (
    Api,
    Backends,
    EventPlane,
    Publisher,
    executor_env,
    free_port,
    names_in_backends,
    now_iso,
    purge_tenants,
    read_topic,
    settings_from,
    stopped_service,
    tenant_created,
    tenant_deleted,
)
from devstack.harness.worker import WorkerProcess, poll
from devstack.process import log_tail
from pipeline.provisioners.base import RESOURCES, TenantSpec
from pipeline.provisioners.kubernetes import quota_hard, user_binding_name
from pipeline.provisioners.kubernetes_quarantine import NOT_QUARANTINED, QUARANTINE_LABEL
from pipeline.provisioners.tiers import Quota, TiersConfig, load_tiers
from tests.integration.conftest import JWT_SECRET

pytestmark = pytest.mark.integration

T = TypeVar("T")
RUN = secrets.token_hex(3)
#: Generous: two shared cores, seven JVM/Go servers, other sessions' tests.
READY_TIMEOUT = 180.0


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backends_env(
    cassandra_service: dict[str, str], s3_service: dict[str, str], pulsar_service: dict[str, str],
    openproject_service: dict[str, str], ignite_service: dict[str, str], elasticsearch_service: dict[str, str],
    kubernetes_service: dict[str, str],
) -> dict[str, str]:
    return {**cassandra_service, **s3_service, **pulsar_service, **openproject_service, **ignite_service,
            **elasticsearch_service, **kubernetes_service}


@pytest.fixture(scope="module")
def tiers() -> TiersConfig:
    return load_tiers()


@pytest.fixture(scope="module")
def plane(stack_ctx: StackContext, pulsar_service: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventPlane]:
    started = EventPlane.start(stack_ctx.cache_dir, tmp_path_factory.mktemp("event-plane"), pulsar_service)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def backends(backends_env: dict[str, str]) -> Iterator[Backends]:
    clients = Backends(settings_from(backends_env))
    yield clients
    clients.close()


@pytest.fixture(scope="module")
def created() -> list[TenantSpec]:
    """Every tenant the module asked for (purged from every backend at the end)."""
    return []


@pytest.fixture(scope="module")
def worker(plane: EventPlane, backends_env: dict[str, str], created: list[TenantSpec],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = executor_env(
        backends_env, plane, JWT_SECRET,
        RECONCILE_INTERVAL_SECONDS="3",
        EXECUTOR_BASE_DELAY_SECONDS="0.2",
        EXECUTOR_MAX_DELAY_SECONDS="2",
        EXECUTOR_MAX_ATTEMPTS="500",  # the Cassandra outage below outlasts any small number of attempts
    )
    home = tmp_path_factory.mktemp("worker")
    port = free_port()
    process = WorkerProcess(env, port, home / "data", home / "worker.log").start()
    try:
        process.wait_ready(timeout=300)
        yield process
    finally:
        process.stop()
        errors = purge_tenants(settings_from(backends_env), created)
        assert not errors, f"cleanup failed: {errors}"


@pytest.fixture(scope="module")
def publisher(plane: EventPlane) -> Iterator[Publisher]:
    pub = Publisher(plane)
    yield pub
    pub.close()


@pytest.fixture(scope="module")
def api(worker: WorkerProcess, admin_token: str) -> Api:
    return Api(worker.url, admin_token)


@pytest.fixture
def new_tenant(created: list[TenantSpec], request: pytest.FixtureRequest) -> Callable[..., str]:
    """``new_tenant(label, tier)``: a tenant id unique to this run (registered for the final purge)."""

    def make(label: str, tier: str = "standard") -> str:
        tenant_id = f"e2e-{RUN}-{label}"
        created.append(TenantSpec(tenant_id=tenant_id, name=f"E2E tenant {tenant_id}", tier=tier,
                                  owner_user_id=f"{tenant_id}-owner@example.com"))
        return tenant_id

    return make


# -- helpers -------------------------------------------------------------------------------------------------


def wait_for(check: Callable[[], T | None], what: str, worker: WorkerProcess, api: Api | None = None,
             tenant_id: str | None = None, timeout: float = READY_TIMEOUT) -> T:
    value = poll(check, timeout, interval=0.3)
    if value:
        return value
    status = api.status(tenant_id) if api and tenant_id else None
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\nstatus: {status}\n"
                f"worker log:\n{log_tail(worker.log_path, 80)}", pytrace=False)


def wait_ready(api: Api, worker: WorkerProcess, tenant_id: str) -> dict[str, Any]:
    return wait_for(lambda: api.all_ready(tenant_id), f"{tenant_id} ready", worker, api, tenant_id)


def names_of(tenant_id: str) -> dict[str, str]:
    names = TenantSpec(tenant_id=tenant_id, name="x", tier="standard").names()
    return {
        "keyspace": names.cassandra_keyspace, "bucket": names.s3_bucket, "pulsar_tenant": names.pulsar_tenant,
        "pulsar_namespace": names.pulsar_namespace, "project": names.openproject_identifier,
        "cache": names.ignite_cache, "index": names.elasticsearch_index, "alias": names.elasticsearch_alias,
        "namespace": names.kubernetes_namespace,
    }


def existing(backends: Backends, tenant_id: str) -> dict[str, bool]:
    """Which of the tenant's seven resources exist, each asked of its backend."""
    n = names_of(tenant_id)
    return {
        "cassandra": backends.keyspace(n["keyspace"]) is not None,
        "s3": backends.bucket(n["bucket"]) is not None,
        "pulsar": n["pulsar_tenant"] in backends.pulsar_tenants(),
        "openproject": bool(backends.projects_named(n["project"])),
        "ignite": backends.cache(n["cache"]) is not None,
        "elasticsearch": backends.index(n["index"]) is not None,
        "kubernetes": not backends.namespace_gone(n["namespace"]),
    }


def provisioning_events(plane: EventPlane, tenant_id: str,
                        until: Callable[[list[dict[str, Any]]], bool] | None = None,
                        timeout: float = 10.0) -> list[dict[str, Any]]:
    def mine(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r.get("tenant_id") == tenant_id]

    records = read_topic(plane.bootstrap, "provisioning-events",
                         (lambda found: until(mine(found))) if until else None, timeout)
    return mine(records)


def metric(worker: WorkerProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:  # noqa: S310 - local worker
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def end_state(backends: Backends, tenant_id: str) -> dict[str, Any]:
    """What the backends hold for the tenant, including versions that change on any write."""
    n = names_of(tenant_id)
    namespace = backends.namespace(n["namespace"])
    assert namespace is not None
    kube = {"Namespace": namespace["metadata"]["resourceVersion"]}
    for kind in ("ResourceQuota", "LimitRange", "NetworkPolicy", "RoleBinding"):
        for item in backends.namespaced(kind, n["namespace"]):
            kube[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    index = backends.index(n["index"])
    assert index is not None
    return {
        "keyspace": backends.keyspace(n["keyspace"]),
        "bucket": backends.bucket(n["bucket"]),
        "pulsar": backends.pulsar_namespace(n["pulsar_tenant"], n["pulsar_namespace"]),
        "projects": [(p["id"], p["name"], p["public"], p["active"]) for p in backends.projects_named(n["project"])],
        "cache": backends.cache(n["cache"]),
        "index": (index["settings"]["index"]["uuid"], index["mappings"], sorted(index["aliases"])),
        "kubernetes": kube,
    }


# -- 1. one event, seven resources with the tier's settings ----------------------------------------------------


@pytest.mark.parametrize("tier", ["free", "standard", "enterprise"])
def test_a_tenant_created_event_gives_the_tenant_seven_resources_with_its_tier_settings(
    tier: str, worker: WorkerProcess, api: Api, publisher: Publisher, backends: Backends, tiers: TiersConfig,
    new_tenant: Callable[..., str],
) -> None:
    tenant_id = new_tenant(f"tier-{tier}", tier)
    config = tiers.tier(tier)
    n = names_of(tenant_id)
    publisher.send("tenant-created-events", tenant_created(tenant_id, tier))

    status = wait_ready(api, worker, tenant_id)
    for resource in RESOURCES:
        entry = status["resources"][resource]
        assert (entry["status"], entry["last_error"]) == ("ready", None), entry
        assert entry["attempts"] >= 1
        # the end-to-end latency (tenant created -> resource ready) is exported per resource
        assert metric(worker, "provisioning_resource_ready_seconds_count", f'resource="{resource}"') >= 1

    # Cassandra: the keyspace with the tier's replication.
    assert backends.keyspace(n["keyspace"]) == {"replication": config.cassandra.replication(), "durable_writes": True}

    # S3 (minio client): versioning, lifecycle rules, tags.
    bucket = backends.bucket(n["bucket"])
    assert bucket is not None
    assert bucket["versioning"] in (("Enabled",) if config.s3.versioning else (None, "Off"))
    assert bucket["lifecycle"] == config.s3.lifecycle.model_dump()
    assert bucket["tags"] == {**config.s3.tags, "tenant": tenant_id, "tier": tier, "region": "local"}

    # Pulsar (admin REST): tenant on every cluster, one namespace with retention, backlog quota, TTL.
    _, clusters = backends.pulsar("/clusters")
    pulsar_state = backends.pulsar_namespace(n["pulsar_tenant"], n["pulsar_namespace"])
    assert pulsar_state == {
        "allowed_clusters": sorted(clusters),
        "namespaces": [n["pulsar_namespace"]],
        "retention": {"retentionTimeInMinutes": config.pulsar.retention_minutes,
                      "retentionSizeInMB": config.pulsar.retention_size_mb},
        "backlog_quota": {"limitSize": config.pulsar.backlog_quota.limit_size_mb * 1024 * 1024,
                          "limitTime": -1, "policy": config.pulsar.backlog_quota.policy},
        "message_ttl_seconds": config.pulsar.message_ttl_seconds,
    }

    # OpenProject (API v3 of the stand-in): exactly one private, active project.
    projects = backends.projects_named(n["project"])
    assert [(p["name"], p["public"], p["active"]) for p in projects] == [(f"E2E tenant {tenant_id}", False, True)]
    assert status["resources"]["openproject"]["detail"]["names"] == {"identifier": n["project"]}

    # Ignite (pyignite): cache mode, backups, atomicity.
    cache = backends.cache(n["cache"])
    assert cache is not None
    modes = {"PARTITIONED": CacheMode.PARTITIONED, "REPLICATED": CacheMode.REPLICATED}
    atomicity = {"ATOMIC": CacheAtomicityMode.ATOMIC, "TRANSACTIONAL": CacheAtomicityMode.TRANSACTIONAL}
    assert cache[PROP_CACHE_MODE] == modes[config.ignite.cache_mode]
    assert cache[PROP_CACHE_ATOMICITY_MODE] == atomicity[config.ignite.atomicity]
    if config.ignite.cache_mode == "PARTITIONED":
        assert cache[PROP_BACKUPS_NUMBER] == config.ignite.backups
    # In the cache group of its configuration (shared partitions: a tenant cache costs little off-heap memory).
    assert cache[PROP_GROUP_NAME] == "_".join(
        ["tenants", config.ignite.cache_mode.lower(), config.ignite.atomicity.lower()]
        + ([f"b{config.ignite.backups}"] if config.ignite.cache_mode == "PARTITIONED" else []))

    # Elasticsearch (official client): shards, replicas, refresh, mappings, alias.
    index = backends.index(n["index"])
    assert index is not None
    settings = index["settings"]["index"]
    assert (int(settings["number_of_shards"]), int(settings["number_of_replicas"]), settings["refresh_interval"]) == (
        config.elasticsearch.shards, config.elasticsearch.replicas, config.elasticsearch.refresh_interval)
    assert index["mappings"]["properties"] == config.elasticsearch.mappings["properties"]
    assert list(index["aliases"]) == [n["alias"]]

    # Kubernetes (kubernetes client): namespace, ResourceQuota, LimitRange, NetworkPolicies, RoleBinding.
    namespace = backends.namespace(n["namespace"])
    assert namespace is not None and not namespace["metadata"].get("deletionTimestamp")
    assert namespace["metadata"]["labels"]["provisioning-service/tenant-id"] == tenant_id
    assert namespace["metadata"]["labels"]["provisioning-service/tier"] == tier
    (quota,) = backends.namespaced("ResourceQuota", n["namespace"])
    assert quota["spec"]["hard"] == quota_hard(config.quota, config.kubernetes.pods)
    (limit_range,) = backends.namespaced("LimitRange", n["namespace"])
    limits = limit_range["spec"]["limits"][0]
    assert limits["max"] == {"cpu": config.kubernetes.limit_range.max_cpu,
                             "memory": config.kubernetes.limit_range.max_memory}
    policies = {p["metadata"]["name"]: p["spec"] for p in backends.namespaced("NetworkPolicy", n["namespace"])}
    assert set(policies) == {"default-deny", "allow-same-namespace", "allow-dns"}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    (binding,) = backends.namespaced("RoleBinding", n["namespace"])
    assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) == ("ClusterRole", "admin")
    assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("User", f"{tenant_id}-owner@example.com")]


# -- 2. the same event twice -----------------------------------------------------------------------------------


def test_the_same_event_twice_creates_nothing_twice_and_changes_nothing(
    worker: WorkerProcess, api: Api, publisher: Publisher, plane: EventPlane, backends: Backends,
    new_tenant: Callable[..., str],
) -> None:
    tenant_id = new_tenant("twice")
    event = tenant_created(tenant_id, "standard")
    duplicates = 'topic="tenant-created-events"'
    before = metric(worker, "provisioning_events_duplicate_total", duplicates)
    publisher.send("tenant-created-events", event)
    publisher.send("tenant-created-events", event)
    wait_ready(api, worker, tenant_id)
    state = end_state(backends, tenant_id)
    assert len(state["projects"]) == 1

    # Once more after everything is ready: still a duplicate, and nothing is written anywhere.
    publisher.send("tenant-created-events", event)
    wait_for(lambda: metric(worker, "provisioning_events_duplicate_total", duplicates) >= before + 2,
             "both repeats to be skipped as duplicates", worker)
    assert api.all_ready(tenant_id)
    assert end_state(backends, tenant_id) == state

    commands = [c for c in read_topic(plane.bootstrap, "provisioning-commands", timeout=5)
                if c.get("tenant_id") == tenant_id]
    assert sorted(c["resource"] for c in commands) == sorted(RESOURCES)  # one command each
    events = provisioning_events(plane, tenant_id, timeout=5)
    ready = sorted(e["resource"] for e in events if e["status"] == "ready")
    assert ready == sorted(RESOURCES)  # each resource applied to ready once
    letters = read_topic(plane.bootstrap, "dead-letter-events", timeout=5)
    assert not [r for r in letters if tenant_id in base64.b64decode(r["original_base64"]).decode(errors="replace")]


# -- 3. a backend down in the middle of provisioning -----------------------------------------------------------


@pytest.mark.timeout(900)
def test_a_stopped_backend_shows_waiting_the_others_finish_and_all_ends_ready_after_restart(
    worker: WorkerProcess, api: Api, publisher: Publisher, plane: EventPlane, backends: Backends,
    stack_ctx: StackContext, new_tenant: Callable[..., str],
) -> None:
    tenant_id = new_tenant("outage")
    others = [r for r in RESOURCES if r != "cassandra"]

    # A stopped server refuses connections: the command waits for it (issue #16) instead of spending attempts.
    def cassandra_waiting_others_ready() -> dict[str, Any] | None:
        status = api.status(tenant_id)
        if not status or set(status["resources"]) != set(RESOURCES):
            return None
        cassandra = status["resources"]["cassandra"]
        done = all(status["resources"][r]["status"] == "ready" for r in others)
        return status if done and cassandra["status"] == "waiting" and cassandra["last_error"] else None

    # Others' tests may use Cassandra too: the outage lasts only as long as this block, restarted in any case.
    with stopped_service("cassandra", stack_ctx):
        publisher.send("tenant-created-events", tenant_created(tenant_id, "standard"))
        during = wait_for(cassandra_waiting_others_ready, "cassandra waiting, the six others ready",
                          worker, api, tenant_id)
    cassandra = during["resources"]["cassandra"]
    assert during["overall"] == "waiting"
    assert cassandra["last_error"].startswith("waiting for backend cassandra at ")
    assert "NoHostAvailable" in cassandra["last_error"] or "refused" in cassandra["last_error"].lower()

    wait_ready(api, worker, tenant_id)
    assert backends.keyspace(names_of(tenant_id)["keyspace"]) is not None
    events = provisioning_events(plane, tenant_id, timeout=5)
    waiting = [e for e in events if e["resource"] == "cassandra" and e["status"] == "waiting"]
    assert waiting and all(e["detail"].get("last_error") for e in waiting)
    assert [e["status"] for e in events if e["resource"] == "cassandra"][-1] == "ready"


# -- 4. hostile tenant ids -------------------------------------------------------------------------------------


MARK = f"zq{RUN}"
HOSTILE_IDS = [
    f"{MARK}'; DROP KEYSPACE system_auth; --",
    f'{MARK}"quoted"',
    f"../{MARK}",
    f"{MARK}/../../admin/v2/tenants",
    f"{MARK}%2F..%2Fx",
    f"{MARK}-ünïcode",
    f"{MARK}-\u0430",  # Cyrillic a, looks like "a"
    MARK + "a" * 300,
    f"{MARK.upper()}-UPPER",
    f"{MARK}_underscore",
    f"{MARK}.dot",
    f"{MARK} space",
    f"{MARK}\n",
    f"-{MARK}-",
]


def test_hostile_tenant_ids_are_refused_and_nothing_is_created_under_an_unsafe_name(
    worker: WorkerProcess, api: Api, publisher: Publisher, plane: EventPlane, backends: Backends,
    new_tenant: Callable[..., str],
) -> None:
    for number, hostile in enumerate(HOSTILE_IDS):
        publisher.send("tenant-created-events", tenant_created(hostile, "standard", event_id=f"{MARK}-evt-{number}"))
        code, body = api.call("POST", "/provision", {"tenant_id": hostile, "name": "Hostile", "tier": "standard"})
        assert code == 422, (hostile, code, body)
        assert body["error"]["code"] == "validation-error"
        assert ["tenant_id"] in [e["loc"] for e in body["error"]["details"]["errors"]]
    # A command with a hostile id injected straight into the executor's topic is refused as well.
    bad_command = {"command_id": f"{MARK}-cmd", "tenant_id": HOSTILE_IDS[0], "resource": "cassandra",
                   "action": "create", "issued_at": "2026-01-01T00:00:00+00:00", "cause_event_id": f"{MARK}-evt",
                   "spec": {"tier": "standard", "name": "x"}}
    read_topic(plane.bootstrap, "provisioning-commands", timeout=0)  # the topic exists (the worker made it)
    _produce(plane.bootstrap, "provisioning-commands", bad_command)
    # A valid id with an owner the Kubernetes RoleBinding cannot take: refused by the schema as well.
    owner_tenant = new_tenant("bad-owner")
    publisher.send("tenant-created-events", {**tenant_created(owner_tenant), "owner_user_id": f"{MARK}'\"/../$(id)"})
    code, body = api.call("POST", "/provision", {"tenant_id": owner_tenant, "name": "Hostile", "tier": "standard",
                                                 "owner_user_id": f"{MARK}'\"/../$(id)"})
    assert code == 422 and ["owner_user_id"] in [e["loc"] for e in body["error"]["details"]["errors"]], body
    expected = len(HOSTILE_IDS) + 2

    def letters_for_every_hostile_input(records: list[dict[str, Any]]) -> bool:
        return len(_hostile_letters(records)) == expected

    letters = _hostile_letters(read_topic(plane.bootstrap, "dead-letter-events", letters_for_every_hostile_input,
                                          timeout=READY_TIMEOUT))
    if len(letters) != expected:
        pytest.fail(f"dead letters for {len(letters)} of {expected} hostile inputs\n"
                    f"{log_tail(worker.log_path, 60)}", pytrace=False)
    for original, letter in letters.items():
        assert letter["reason"] == "schema", (original, letter)
        field = "owner_user_id" if owner_tenant in original else "tenant_id"
        assert field in letter["detail"], (original, letter)
    assert {letter["source_topic"] for letter in letters.values()} == {"tenant-created-events",
                                                                       "provisioning-commands"}
    assert api.status(owner_tenant) is None

    # Nothing anywhere carries the marker (whatever a backend might have made of a hostile id).
    listed = names_in_backends(backends)
    for backend, names in listed.items():
        assert not [name for name in names if MARK in name.lower()], backend
        assert not [name for name in names if owner_tenant in name], backend
    code, page = api.call("GET", "/tenants?limit=200")
    assert code == 200 and not [t for t in page["items"] if MARK in t["tenant_id"].lower()]
    commands = read_topic(plane.bootstrap, "provisioning-commands", timeout=5)
    emitted = [c for c in commands if c.get("command_id") != bad_command["command_id"]]  # all but ours
    assert not [c for c in emitted if MARK in str(c.get("tenant_id", "")).lower()]


def _hostile_letters(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for record in records:
        original = base64.b64decode(record.get("original_base64", "")).decode(errors="replace")
        if MARK in original.lower():
            found[original] = record
    return found


def _produce(bootstrap: str, topic: str, value: dict[str, Any]) -> None:
    import asyncio
    import json

    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, json.dumps(value).encode(), key=b"hostile")
        finally:
            await producer.stop()

    asyncio.run(send())


# -- 5. teardown -------------------------------------------------------------------------------------------------


def test_teardown_removes_exactly_what_was_created_and_keeps_data_unless_purge(
    worker: WorkerProcess, api: Api, publisher: Publisher, backends: Backends, new_tenant: Callable[..., str],
) -> None:
    kept, purged, bystander = new_tenant("keep"), new_tenant("purge"), new_tenant("bystander")
    for tenant_id in (kept, purged, bystander):
        publisher.send("tenant-created-events", tenant_created(tenant_id, "standard"))
    for tenant_id in (kept, purged, bystander):
        wait_ready(api, worker, tenant_id)
    # Some data in the data-bearing resources.
    for tenant_id in (kept, purged):
        n = names_of(tenant_id)
        backends.minio().put_object(n["bucket"], "docs/readme.txt", io.BytesIO(b"hello"), 5)
        with backends.elasticsearch() as es:
            es.index(index=n["alias"], document={"tenant_id": tenant_id, "title": "hello"}, refresh=True)
        backends.cql(f'CREATE TABLE "{n["keyspace"]}".notes (k int PRIMARY KEY, v text)')
    before_bystander = end_state(backends, bystander)

    code, body = api.call("DELETE", f"/tenants/{kept}")  # REST, no purge
    assert code == 202 and body["purge"] is False, body
    publisher.send("tenant-deleted-events", tenant_deleted(purged, purge=True))  # event, purge

    def deleted(tenant_id: str) -> dict[str, Any] | None:
        status = api.status(tenant_id)
        return status if status and status["overall"] == "deleted" else None

    for tenant_id in (kept, purged):
        wait_for(partial(deleted, tenant_id), f"{tenant_id} deleted", worker, api, tenant_id)
        assert api.call("GET", f"/tenants/{tenant_id}")[0] == 404

    # Without purge: keyspace, bucket (with its object) and index (with its document) are kept.
    n = names_of(kept)
    assert existing(backends, kept) == {"cassandra": True, "s3": True, "pulsar": False, "openproject": False,
                                        "ignite": False, "elasticsearch": True, "kubernetes": False}
    assert backends.minio().get_object(n["bucket"], "docs/readme.txt").read() == b"hello"
    with backends.elasticsearch() as es:
        assert es.count(index=n["index"])["count"] == 1
    status = api.status(kept)
    assert status is not None
    details = {r: status["resources"][r]["detail"] for r in RESOURCES}
    assert details["cassandra"]["kept"] == [f"keyspace {n['keyspace']}"]
    assert details["s3"]["kept"] == [f"bucket {n['bucket']}"]
    assert details["elasticsearch"]["kept"] == [f"index {n['index']} (alias {n['alias']})"]
    assert details["pulsar"]["deleted"] == [f"namespace {n['pulsar_namespace']}", f"tenant {n['pulsar_tenant']}"]

    # With purge: everything goes, data included.
    assert existing(backends, purged) == dict.fromkeys(RESOURCES, False)

    # The other tenant is untouched, and still ready.
    assert existing(backends, bystander) == dict.fromkeys(RESOURCES, True)
    assert end_state(backends, bystander) == before_bystander
    assert api.all_ready(bystander)


# -- 6. drift ----------------------------------------------------------------------------------------------------


def test_resources_deleted_by_hand_are_reported_drifted_and_re_created(
    worker: WorkerProcess, api: Api, publisher: Publisher, plane: EventPlane, backends: Backends,
    new_tenant: Callable[..., str],
) -> None:
    tenant_id = new_tenant("drift")
    n = names_of(tenant_id)
    publisher.send("tenant-created-events", tenant_created(tenant_id, "standard"))
    wait_ready(api, worker, tenant_id)
    expected_bucket, expected_cache = backends.bucket(n["bucket"]), backends.cache(n["cache"])

    # Behind the service's back: the (empty) bucket, the Ignite cache, the default-deny NetworkPolicy.
    client = backends.minio()
    leftovers = [DeleteObject(o.object_name or "", o.version_id)
                 for o in client.list_objects(n["bucket"], recursive=True, include_version=True)]
    assert not list(client.remove_objects(n["bucket"], leftovers))
    client.remove_bucket(n["bucket"])
    backends.ignite().get_cache(n["cache"]).destroy()
    from kubernetes import client as k8s

    k8s.NetworkingV1Api(backends.kube()).delete_namespaced_network_policy("default-deny", n["namespace"])
    assert backends.bucket(n["bucket"]) is None and backends.cache(n["cache"]) is None

    def drifted(events: list[dict[str, Any]]) -> bool:
        return {"s3", "ignite", "kubernetes"} <= {e["resource"] for e in events if e["status"] == "drifted"}

    events = provisioning_events(plane, tenant_id, drifted, timeout=READY_TIMEOUT)
    if not drifted(events):
        pytest.fail(f"no drifted events for s3, ignite and kubernetes: {[(e['resource'], e['status']) for e in events]}"
                    f"\n{log_tail(worker.log_path, 60)}", pytrace=False)
    for event in events:
        if event["status"] == "drifted":
            assert event["detail"]["last_error"], event

    def repaired() -> bool:
        policies = {p["metadata"]["name"] for p in backends.namespaced("NetworkPolicy", n["namespace"])}
        return bool(api.all_ready(tenant_id)) and backends.bucket(n["bucket"]) is not None and (
            backends.cache(n["cache"]) is not None and "default-deny" in policies)

    wait_for(repaired, "the drifted resources re-created and ready", worker, api, tenant_id)
    assert backends.bucket(n["bucket"]) == expected_bucket
    assert backends.cache(n["cache"]) == expected_cache
    after = provisioning_events(plane, tenant_id, timeout=5)
    for resource in ("s3", "ignite", "kubernetes"):
        states = [e["status"] for e in after if e["resource"] == resource]
        assert states[states.index("drifted"):][-1] == "ready", (resource, states)
    assert len({e["event_id"] for e in after}) == len(after), "every transition has its own event id"


# -- 7. quota ------------------------------------------------------------------------------------------------------


def test_put_quota_updates_the_quota_table_and_the_kubernetes_resource_quota(
    worker: WorkerProcess, api: Api, publisher: Publisher, plane: EventPlane, backends: Backends,
    tiers: TiersConfig, new_tenant: Callable[..., str],
) -> None:
    tenant_id = new_tenant("quota")
    namespace = names_of(tenant_id)["namespace"]
    publisher.send("tenant-created-events", tenant_created(tenant_id, "standard"))
    wait_ready(api, worker, tenant_id)
    pods = tiers.tier("standard").kubernetes.pods
    (quota,) = backends.namespaced("ResourceQuota", namespace)
    assert quota["spec"]["hard"] == quota_hard(tiers.tier("standard").quota, pods)

    new = Quota(cpu_cores=12.5, memory_gib=48, gpus=1, storage_gib=250)
    code, body = api.call("PUT", f"/tenants/{tenant_id}/quota", new.model_dump())
    assert code == 202, body

    def updated() -> bool:
        code, record = api.call("GET", f"/tenants/{tenant_id}/quota")
        (current,) = backends.namespaced("ResourceQuota", namespace)
        return code == 200 and record["limits"] == new.model_dump() and current["spec"]["hard"] == quota_hard(new, pods)

    wait_for(updated, "the quota table and the ResourceQuota at the new quota", worker, api, tenant_id)
    (current,) = backends.namespaced("ResourceQuota", namespace)
    assert current["spec"]["hard"]["requests.cpu"] == "12500m" and current["spec"]["hard"]["limits.memory"] == "48Gi"
    events = provisioning_events(plane, tenant_id, lambda es: any(
        e["resource"] == "kubernetes:update_quota" and e["status"] == "ready" for e in es), timeout=30)
    assert [e["status"] for e in events if e["resource"] == "kubernetes:update_quota"][-1] == "ready"

    # Reconciliation keeps the new quota (it verifies against the quota table, not the tier). A pass starts
    # verifies only after the previous pass's finished: two more passes mean one full round after the update.
    passes = "reconcile pass: verifying"
    seen = _count_in_log(worker.log_path, passes)
    wait_for(lambda: _count_in_log(worker.log_path, passes) >= seen + 2, "two more reconcile passes", worker)
    (current,) = backends.namespaced("ResourceQuota", namespace)
    assert current["spec"]["hard"] == quota_hard(new, pods)
    drift = [e for e in provisioning_events(plane, tenant_id, timeout=5) if e["status"] == "drifted"]
    assert not drift
    assert api.all_ready(tenant_id)


def _count_in_log(path: Path, text: str) -> int:
    return path.read_text(errors="replace").count(text)


# -- users: user-created grants on the backends, user-deleted revokes ----------------------------------------


def test_user_created_grants_a_rolebinding_and_a_pulsar_permission_and_user_deleted_revokes_both(
    worker: WorkerProcess, api: Api, publisher: Publisher, backends: Backends, new_tenant: Callable[..., str],
) -> None:
    tenant_id = new_tenant("users")
    n = names_of(tenant_id)
    user_id = f"dana-{RUN}@example.com"
    binding = user_binding_name(user_id)
    permissions_path = f"/namespaces/{n['pulsar_namespace']}/permissions"
    publisher.send("tenant-created-events", tenant_created(tenant_id, "standard"))
    # Sent once the tenant is recorded (the two topics are consumed independently: a user of a tenant not yet
    # recorded is refused), not once it is ready: the grants may run before the namespaces exist, and retry.
    wait_for(lambda: api.call("GET", f"/tenants/{tenant_id}")[0] == 200, "the tenant recorded", worker, api,
             tenant_id)
    publisher.send("user-created-events", {
        "event_id": f"{tenant_id}-user-created", "tenant_id": tenant_id, "occurred_at": now_iso(),
        "user_id": user_id, "email": "dana@example.com", "roles": ["tenant-member", "editor"],
    })

    # Kubernetes and Pulsar only: the OpenProject membership is tested on the stand-in served in process
    # (tests/pipeline/provisioners/test_openproject_users.py), since the shared stack's stand-in may be a build
    # from before its membership endpoints.
    def user_ready() -> dict[str, Any] | None:
        code, page = api.call("GET", f"/tenants/{tenant_id}/users")
        users = page.get("items", []) if code == 200 else []
        ready = users and all(users[0]["resources"][r]["status"] == "ready" for r in ("kubernetes", "pulsar"))
        return users[0] if ready else None

    user = wait_for(user_ready, "the user's grants ready", worker, api, tenant_id)
    assert user["user_id"] == user_id and set(user["resources"]) == {"kubernetes", "pulsar", "openproject"}
    bindings = {b["metadata"]["name"]: b for b in backends.namespaced("RoleBinding", n["namespace"])}
    assert bindings[binding]["roleRef"]["name"] == "edit"
    assert bindings[binding]["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                              "name": user_id}]
    status, permissions = backends.pulsar(permissions_path)
    assert status == 200 and sorted(permissions[user_id]) == ["consume", "produce"]

    publisher.send("user-deleted-events", {
        "event_id": f"{tenant_id}-user-deleted", "tenant_id": tenant_id, "occurred_at": now_iso(), "user_id": user_id,
    })

    def revoked() -> bool:
        code, page = api.call("GET", f"/tenants/{tenant_id}/users")
        statuses = {r: s["status"] for u in page.get("items", []) for r, s in u["resources"].items()} \
            if code == 200 else {}
        status, permissions = backends.pulsar(permissions_path)
        names = {b["metadata"]["name"] for b in backends.namespaced("RoleBinding", n["namespace"])}
        return (code == 200 and statuses.get("kubernetes", "deleted") == "deleted"
                and statuses.get("pulsar", "deleted") == "deleted" and status == 200
                and user_id not in permissions and binding not in names)

    wait_for(revoked, "the user's grants revoked", worker, api, tenant_id)
    names = {b["metadata"]["name"] for b in backends.namespaced("RoleBinding", n["namespace"])}
    assert "tenant-admin" in names  # the owner's binding is not the user's
    # The tenant's own resources were never waited for above (the grants need only the namespaces): they end
    # ready all the same, whatever the user's grant and revoke did meanwhile.
    wait_for(lambda: api.all_ready(tenant_id), "the tenant's own resources ready", worker, api, tenant_id)


# -- quarantine: a critical anomaly isolates the workload's network until an admin releases it ----------------


def test_a_critical_anomaly_isolates_the_workload_until_an_admin_releases_it(
    worker: WorkerProcess, api: Api, publisher: Publisher, plane: EventPlane, backends: Backends,
    new_tenant: Callable[..., str],
) -> None:
    tenant_id = new_tenant("quarantine")
    namespace = names_of(tenant_id)["namespace"]
    publisher.send("tenant-created-events", tenant_created(tenant_id, "standard"))
    wait_ready(api, worker, tenant_id)
    # the tenant's workload, as its admin would make it (the local server runs no controller-manager: its pod
    # is made by hand)
    core, apps = k8s.CoreV1Api(backends.kube()), k8s.AppsV1Api(backends.kube())
    container = {"name": "api", "image": "registry.invalid/api:1"}
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "api"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "api"}},
        "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [container]}}}})
    core.create_namespaced_pod(namespace, {"metadata": {"name": "api-0", "labels": {"app": "api"}},
                                           "spec": {"containers": [container]}})

    def pod_labels() -> dict[str, str]:
        labels: dict[str, str] = backends.plain(core.read_namespaced_pod("api-0", namespace))["metadata"]["labels"]
        return labels

    def policies() -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in backends.namespaced("NetworkPolicy", namespace)}

    publisher.send("resource-anomaly-events", {
        "event_id": f"{tenant_id}-anomaly", "tenant_id": tenant_id, "occurred_at": now_iso(),
        "resource_type": "deployment", "resource_id": "api", "anomaly_type": "egress-spike", "severity": "critical",
        "value": 9.0})
    wait_for(lambda: "quarantine-api" in policies() and pod_labels().get(QUARANTINE_LABEL) == "true",
             "the deny-all policy and the pod's quarantine label", worker, api, tenant_id)
    deny = policies()["quarantine-api"]["spec"]
    assert deny == {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress", "Egress"]}
    allow = [p for p in policies().values() if p["spec"].get("ingress") or p["spec"].get("egress")]
    assert allow and all(NOT_QUARANTINED in p["spec"]["podSelector"].get("matchExpressions", []) for p in allow)
    events = provisioning_events(plane, tenant_id, lambda es: any(
        e["resource"] == "kubernetes:quarantine" and e["status"] == "ready" for e in es), timeout=30)
    assert [e["status"] for e in events if e["resource"] == "kubernetes:quarantine"][-1] == "ready"

    code, body = api.call("DELETE", f"/tenants/{tenant_id}/quarantine/api")
    assert code == 202, body
    wait_for(lambda: "quarantine-api" not in policies() and QUARANTINE_LABEL not in pod_labels(),
             "the policy deleted and the label removed", worker, api, tenant_id)
    template = backends.plain(apps.read_namespaced_deployment("api", namespace))["spec"]["template"]
    assert template["metadata"]["labels"] == {"app": "api"}
    assert api.all_ready(tenant_id)  # the tenant's own resources are untouched
