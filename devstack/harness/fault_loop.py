"""The crash and fault loop (issue #11): a steady stream of mixed events through Pulsar while the worker is
killed with SIGKILL at random moments, a backend is stopped for a while and two workers run with one of them
killed; afterwards the tables (through the API), the output topics, every backend and the derivatives
stand-in are compared with the ground truth computed from the events sent.

Shared by ``test_fault_loop.py`` (a short run in ``make test``) and ``bench/crash_loop.py`` (the long run
whose figures the docs quote).

**The ground truth.** Every event the loop publishes is recorded with what it must lead to:

* ``tenant-created`` (a backlog preloaded into Kafka, read by a fresh consumer group, plus the stream):
  the tenant's record, its 7 provisioning commands and each resource ``ready`` (or ``failed`` with a reason),
  the resource present in its backend;
* ``tenant-deleted`` (with and without purge, for tenants already ready): the tenant ``deleted``; with purge
  nothing left in any backend, without purge only the keyspace, the bucket and the index;
* ``user-created``: the user's ``create_user`` commands (one per ``USER_RESOURCES``) for that event;
* ``resource-metrics``: one sample per (tenant, workload), so the utilization view counts exactly 1 sample;
* ``compute-request-events`` (GPU through the derivatives stand-in, CPU on the kube-apiserver): the request
  in a final state (``terminated`` or ``failed``), and no live allocation left for it at either provider.

Dependent events (users, metrics, deletes, compute) are only sent for tenants the API already shows ready:
the platform's topics are not ordered with one another, so a user of a tenant not created yet is a
legitimate ``unknown-tenant`` dead letter, not a loss.

**Duplicated side effects**: two command ids for one tenant, resource and action (one user's commands:
per cause event); two live allocations of one request at the stand-in; two Pods of one request.

Every tenant id carries the run id; everything the run created is purged at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devstack.base import StackContext
from devstack.harness.crash import preload_history
from devstack.harness.tenant_provisioning import (
    Api,
    Backends,
    EventPlane,
    Publisher,
    executor_env,
    names_in_backends,
    purge_tenants,
    read_topic,
    stopped_service,
    tenant_created,
    tenant_deleted,
)
from devstack.harness.worker import WorkerProcess, free_port, poll
from pipeline.compute.allocation import token_prefix
from pipeline.contract.topics import (
    COMPUTE_REQUESTS,
    PROVISIONING_COMMANDS,
    RESOURCE_METRICS,
    TENANT_CREATED,
    TENANT_DELETED,
    USER_CREATED,
)
from pipeline.provisioners.base import RESOURCES, TenantSpec
from pipeline.tenants.logic import USER_RESOURCES

#: The in-house cluster's shapes: one GPU shape and one CPU shape, both with room for every request.
K8S_SHAPES: dict[str, Any] = {
    "running_on_create": True,  # the local kube-apiserver has no scheduler: a created Pod counts as running
    "price_per_gpu_hour": {"H100": 0.5},
    "shapes": [
        {"name": "h100-x1", "gpu_name": "H100", "gpu_count": 1, "vcpus": 4, "memory_gib": 16, "capacity": 50},
        {"name": "cpu-x4", "vcpus": 4, "memory_gib": 16, "capacity": 200},
    ],
}
#: A request lasts this long (36 s): the sweep terminates it at the end, so every request ends final.
COMPUTE_HOURS = 0.01
FINAL_COMPUTE = {"terminated", "failed"}
#: Resource states that end a tenant's provisioning without the resource (each must say why).
REFUSED = ("failed", "refused")
#: API answers that say "not now" rather than "not so": no answer, a 5xx.
TRANSIENT = frozenset({0, 500, 502, 503, 504})
#: What a tenant-deleted event without purge keeps (docs/events.md).
KEPT_WITHOUT_PURGE = ("cassandra", "s3", "elasticsearch")


@dataclass
class LoopPlan:
    """How much of everything a run sends and does."""

    backlog: int = 6
    tenants: int = 12
    deletes: int = 3
    users: int = 6
    metrics: int = 20
    compute: int = 4
    kills: int = 4
    #: Events per second through Pulsar.
    rate: float = 3.0
    #: Seconds between two random kills (a kill after a compute request comes sooner).
    kill_delay: tuple[float, float] = (4.0, 12.0)
    #: Backends stopped (one after the other, through the devstack) for ``outage_seconds`` each.
    outages: tuple[str, ...] = ("derivatives",)
    outage_seconds: float = 15.0
    two_workers: bool = True
    #: KAFKA_GROUP_INSTANCE_ID per worker (KIP-345): a restarted worker gets its partitions back at once; a
    #: worker gone for good gives them up only after the session timeout.
    static_membership: bool = True
    converge_timeout: float = 600.0
    seed: int = 11


@dataclass
class LoopReport:
    run: str = ""
    kills: int = 0
    kills_during_backlog: int = 0
    kills_during_allocations: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    outages: list[str] = field(default_factory=list)
    second_worker_killed: bool = False
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    not_converged: list[str] = field(default_factory=list)
    backend_mismatches: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    compute_states: Counter[str] = field(default_factory=Counter)
    #: Why the requests that ended ``failed`` failed (termination reason: first words of the error).
    compute_failures: Counter[str] = field(default_factory=Counter)
    converge_seconds: float | None = None
    restart_to_ready_seconds: list[float] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    cleanup_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.leaked or self.not_converged or self.backend_mismatches)

    def summary(self) -> dict[str, Any]:
        ready = sorted(self.restart_to_ready_seconds)
        return {
            "run": self.run,
            "kills": self.kills,
            "kills_during_backlog": self.kills_during_backlog,
            "kills_during_allocations": self.kills_during_allocations,
            "second_worker_killed": self.second_worker_killed,
            "outages": self.outages,
            "events_sent": sum(self.sent.values()),
            "events_sent_by_topic": dict(sorted(self.sent.items())),
            "events_lost": len(self.lost),
            "duplicated_side_effects": len(self.duplicated),
            "leaked_allocations": len(self.leaked),
            "not_converged": len(self.not_converged),
            "backend_mismatches": len(self.backend_mismatches),
            "resources_refused_with_reason": len(self.refused),
            "compute_final_states": dict(sorted(self.compute_states.items())),
            "compute_failure_reasons": dict(sorted(self.compute_failures.items())),
            "dead_letters_by_reason": dict(sorted(self.dead_letters.items())),
            "converge_seconds_after_last_kill": self.converge_seconds,
            "restart_to_ready_seconds_median": ready[len(ready) // 2] if ready else None,
            "restart_to_ready_seconds_max": ready[-1] if ready else None,
        }

    def details(self, limit: int = 20) -> dict[str, list[str]]:
        return {name: values[:limit] for name, values in (
            ("lost", self.lost), ("duplicated", self.duplicated), ("leaked", self.leaked),
            ("not_converged", self.not_converged), ("backend_mismatches", self.backend_mismatches),
            ("cleanup_errors", self.cleanup_errors)) if values}


# -- ground truth ------------------------------------------------------------------------------------------


@dataclass
class Truth:
    """What was sent, and so what must be."""

    tiers: dict[str, str] = field(default_factory=dict)
    deleted: dict[str, bool] = field(default_factory=dict)  # tenant -> purge
    users: dict[str, str] = field(default_factory=dict)  # user event id -> tenant
    metrics: dict[str, str] = field(default_factory=dict)  # workload -> tenant
    compute: dict[str, str] = field(default_factory=dict)  # request id -> provider kind (gpu / cpu)

    @property
    def alive(self) -> list[str]:
        return sorted(t for t in self.tiers if t not in self.deleted)


def backend_name(resource: str, tenant_id: str) -> str:
    """The name of ``tenant_id``'s resource in ``resource`` (pipeline/provisioners/naming.py)."""
    if resource in ("cassandra", "ignite"):
        return "tenant_" + tenant_id.replace("-", "_")
    if resource == "elasticsearch":
        return f"tenant-{tenant_id}-v1"
    return f"tenant-{tenant_id}"


def command_keys(records: list[dict[str, Any]]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(what, command ids) for the provisioning commands: ``tenant/resource/action`` for creates and deletes,
    ``tenant/resource/create_user/<cause event>`` for users; and ``tenant/resource`` -> actions seen."""
    ids: dict[str, set[str]] = defaultdict(set)
    seen: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if not isinstance(record, dict) or "command_id" not in record or "resource" not in record:
            continue
        tenant, resource, action = record.get("tenant_id"), record.get("resource"), record.get("action")
        key = f"{tenant}/{resource}/{action}"
        if action == "create_user":
            key += f"/{record.get('cause_event_id')}"
        ids[key].add(str(record["command_id"]))
        seen[f"{tenant}/{resource}"].add(str(action))
    return ids, seen


# -- the moving parts --------------------------------------------------------------------------------------


class KillBudget:
    """How many kills are left, shared by the kill switches of a run."""

    def __init__(self, kills: int) -> None:
        self._left = kills
        self._lock = threading.Lock()
        self.last_kill_at: float | None = None
        self.done = 0

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._left += 1

    def record(self) -> None:
        with self._lock:
            self.done += 1
            self.last_kill_at = time.monotonic()


class KillSwitch:
    """Kills ``worker`` at random moments (``delay`` apart once it serves) or soon after ``trigger()``, and
    restarts it at once; measures how long each restart takes to serve (/ready) again."""

    def __init__(self, worker: WorkerProcess, budget: KillBudget, delay: tuple[float, float], rng: random.Random,
                 ready_timeout: float = 300) -> None:
        self.worker = worker
        self.budget = budget
        self.delay = delay
        self.random = rng
        self.ready_timeout = ready_timeout
        self.ready_seconds: list[float] = []
        self.kinds: Counter[str] = Counter()
        self.phase = "backlog"
        self._trigger = threading.Event()
        self._triggered_kind = ""
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def trigger(self, kind: str) -> None:
        self._triggered_kind = kind
        self._trigger.set()

    def run(self) -> None:
        try:
            self.worker.wait_ready(self.ready_timeout)
            while not self.stop.is_set() and self.budget.take():
                self._trigger.wait(self.random.uniform(*self.delay))
                kind = self._triggered_kind if self._trigger.is_set() else self.phase
                self._trigger.clear()
                self._triggered_kind = ""
                if self.stop.is_set():
                    self.budget.give_back()
                    break
                self.worker.kill()
                self.budget.record()
                self.kinds[kind] += 1
                self.worker.start()
                started = time.monotonic()
                self.worker.wait_ready(self.ready_timeout)
                self.ready_seconds.append(round(time.monotonic() - started, 2))
        except BaseException as exc:  # pytest.fail in wait_ready raises a BaseException; report it, never hang
            self.error = exc


def standin_state(engine_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{engine_url}/_standin/state", timeout=10) as response:  # noqa: S310 - local
        active: list[dict[str, Any]] = json.loads(response.read())["active"]
        return active


def standin_release(engine_url: str, allocation_id: str) -> None:
    request = urllib.request.Request(f"{engine_url}/v1/allocations/{allocation_id}",  # noqa: S310 - local
                                     method="DELETE")
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def compute_pods(backends: Backends, tenants: set[str]) -> list[dict[str, Any]]:
    """The compute Pods the kube-apiserver holds in ``tenants``' namespaces."""
    pods = k8s.CoreV1Api(backends.kube()).list_pod_for_all_namespaces(
        label_selector="app.kubernetes.io/component=compute")
    items: list[dict[str, Any]] = backends.plain(pods).get("items", [])
    namespaces = {f"tenant-{t}" for t in tenants}
    return [p for p in items if p["metadata"]["namespace"] in namespaces]


def ensure_service_account(backends: Backends, tenant_id: str) -> None:
    """The ``default`` ServiceAccount a controller-manager would create (the local stack runs none; without it
    the ServiceAccount admission plugin refuses every Pod in the namespace)."""
    try:
        k8s.CoreV1Api(backends.kube()).create_namespaced_service_account(
            f"tenant-{tenant_id}", k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default")))
    except ApiException as exc:
        if exc.status != 409:
            raise


def loop_env(backends_env: dict[str, str], engine_env: dict[str, str], plane: EventPlane, jwt_secret: str,
             **overrides: str) -> dict[str, str]:
    """A worker with the executor and compute on, fast retries and sweeps, short allocation bounds."""
    return executor_env(
        {**backends_env, **engine_env}, plane, jwt_secret,
        RECONCILE_INTERVAL_SECONDS="5",
        EXECUTOR_BASE_DELAY_SECONDS="0.2",
        EXECUTOR_MAX_DELAY_SECONDS="3",
        EXECUTOR_MAX_ATTEMPTS="500",  # a stopped backend outlasts any small number of attempts
        COMPUTE_KUBERNETES=json.dumps(K8S_SHAPES),
        COMPUTE_ALLOCATE_TIMEOUT_SECONDS="5",
        COMPUTE_ENGINE_TIMEOUT_SECONDS="5",
        COMPUTE_POLL_INTERVAL_SECONDS="0.5",
        COMPUTE_ENFORCE_INTERVAL_SECONDS="3",
        COMPUTE_DEADLINE_SECONDS="30",
        COMPUTE_QUOTE_REFRESH_SECONDS="20",
        **overrides,
    )


# -- the loop ----------------------------------------------------------------------------------------------


class CrashAndFaultLoop:
    def __init__(self, plan: LoopPlan, plane: EventPlane, env: dict[str, str], backends: Backends,
                 stack_ctx: StackContext, start_worker: Callable[..., WorkerProcess], token: str,
                 progress: Callable[[str], None] = lambda _: None) -> None:
        self.plan = plan
        self.plane = plane
        self.env = env
        self.backends = backends
        self.ctx = stack_ctx
        self.start_worker = start_worker
        self.token = token
        self.say = progress
        self.random = random.Random(plan.seed)
        self.run_id = secrets.token_hex(3)
        self.report = LoopReport(run=self.run_id)
        self.truth = Truth()
        self.engine_url = env["DERIVATIVES_ENGINE_URL"]
        self.ready: set[str] = set()
        self.pending: set[str] = set()
        self.touched: set[str] = set()
        self._ready_lock = threading.Lock()
        self.workers: list[WorkerProcess] = []
        self.budget = KillBudget(0)

    # ids: short, so that every request id (<tenant>.<name>) is a distinct token prefix (16 characters)
    def tenant_id(self, label: str) -> str:
        return f"f{self.run_id}-{label}"

    def _worker_env(self, name: str) -> dict[str, str]:
        if not self.plan.static_membership:
            return self.env
        return {**self.env, "KAFKA_GROUP_INSTANCE_ID": f"loop-{self.run_id}-{name}"}

    def api(self) -> Api:
        return Api(self.workers[0].url, self.token)

    def read(self, path: str, patience: float = 0.0) -> tuple[int, Any]:
        """GET ``path`` from the first worker; a transient failure (no answer, 5xx: a rebalance, a peer that
        died and still owns the tenant until its session times out) is retried for ``patience`` seconds."""
        deadline = time.monotonic() + patience
        while True:
            code, body = self.api().call("GET", path)
            if code not in TRANSIENT or time.monotonic() >= deadline:
                return code, body
            time.sleep(2.0)

    def status(self, tenant: str, patience: float = 0.0) -> dict[str, Any] | None:
        code, body = self.read(f"/tenants/{tenant}/provisioning-status", patience)
        return body if code == 200 and isinstance(body, dict) else None

    def serving(self) -> bool:
        """Every live worker answers /ready."""
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is not None:
                continue
            try:
                with urllib.request.urlopen(f"{worker.url}/ready", timeout=5) as response:  # noqa: S310 - local
                    if response.status != 200:
                        return False
            except OSError:
                return False
        return True

    def run(self) -> LoopReport:
        try:
            self._run()
        finally:
            self._cleanup()
        return self.report

    def _run(self) -> None:
        plan = self.plan
        old = preload_history(self.plane, plan.backlog, self.run_id) if plan.backlog else []
        for tenant in old:
            self.truth.tiers[tenant] = "standard"
        self.pending.update(old)
        self.report.sent[f"{TENANT_CREATED} (backlog)"] = plan.backlog
        budget = self.budget = KillBudget(plan.kills)
        first = self.start_worker(self._worker_env("a"), port=free_port())
        self.workers.append(first)
        switch = KillSwitch(first, budget, plan.kill_delay, self.random)
        kill_thread = threading.Thread(target=switch.run, daemon=True)
        kill_thread.start()
        watcher_stop = threading.Event()
        watcher = threading.Thread(target=self._watch_ready, args=(watcher_stop,), daemon=True)
        watcher.start()
        publisher = Publisher(self.plane)
        try:
            first.wait_ready(300)
            switch.trigger("backlog")  # the first kill: while the fresh consumer group works through the backlog
            self._stream(publisher, switch)
        finally:
            publisher.close()
        # Kills left over happen now, while the tail of the stream is processed.
        kill_thread.join(timeout=plan.kills * 320 + 60)
        switch.stop.set()
        if switch.error is not None:
            raise switch.error
        self.report.kills = budget.done  # with the second worker's
        self.report.kills_during_backlog = switch.kinds["backlog"]
        self.report.kills_during_allocations = switch.kinds["allocation"]
        self.report.restart_to_ready_seconds = switch.ready_seconds
        first.wait_ready(300)
        settled_from = budget.last_kill_at or time.monotonic()
        self.say("waiting for every tenant, user, sample and request to converge")
        converged = poll(self._settled, plan.converge_timeout, interval=3.0)
        if converged:
            self.report.converge_seconds = round(time.monotonic() - settled_from, 1)
        watcher_stop.set()
        self._check()

    # -- the stream ---------------------------------------------------------------------------------------

    def _stream(self, publisher: Publisher, switch: KillSwitch) -> None:
        plan = self.plan
        kinds = (["tenant"] * plan.tenants + ["delete"] * plan.deletes + ["user"] * plan.users
                 + ["metric"] * plan.metrics + ["compute"] * plan.compute)
        # Half the tenants first (dependents need ready tenants), then everything else mixed.
        head = ["tenant"] * (plan.tenants // 2)
        tail = [k for k in kinds if k != "tenant"] + ["tenant"] * (plan.tenants - len(head))
        self.random.shuffle(tail)
        schedule = head + tail
        total = len(schedule)
        # The i-th outage starts right after a compute request is sent (its allocation is in flight then).
        computes = max(plan.compute, 1)
        outage_after = {max(1, (i + 1) * computes // (len(plan.outages) + 1)): name
                        for i, name in enumerate(plan.outages)}
        second_at = int(total * 0.7) if plan.two_workers else -1
        switch.phase = "stream"
        counters: Counter[str] = Counter()
        queue = list(schedule)
        threads: list[threading.Thread] = []
        sent = 0
        last_progress = time.monotonic()
        while queue:
            kind = queue.pop(0)
            if not self._send(publisher, kind, counters):
                queue.append(kind)  # no ready tenant for it yet: later
                if time.monotonic() - last_progress > plan.converge_timeout:
                    raise RuntimeError(f"no tenant became ready for {plan.converge_timeout:.0f}s; left: {queue}")
                time.sleep(min(1.0, 1 / plan.rate))
                continue
            sent += 1
            last_progress = time.monotonic()
            if kind == "compute":
                if self.random.random() < 0.6:  # a kill while the allocation runs
                    threading.Timer(self.random.uniform(0.2, 2.0), switch.trigger, args=("allocation",)).start()
                name = outage_after.pop(counters["compute"], None) if plan.compute else None
                if name is not None:
                    threads.append(self._background(self._outage, name))
            if sent == second_at:
                threads.append(self._background(self._second_worker))
            time.sleep(1 / plan.rate)
        threads += [self._background(self._outage, name) for name in outage_after.values()]
        for thread in threads:
            thread.join(timeout=600)

    def _background(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        return thread

    def _ready_tenants(self, predicate: Callable[[str], bool]) -> list[str]:
        with self._ready_lock:
            return sorted(t for t in self.ready if t not in self.truth.deleted and predicate(t))

    def _send(self, publisher: Publisher, kind: str, counters: Counter[str]) -> bool:
        number = counters[kind]
        truth = self.truth
        if kind == "tenant":
            tenant = self.tenant_id(f"t{number}")
            tier = "enterprise" if number % 3 == 0 else ("standard" if number % 3 == 1 else "free")
            truth.tiers[tenant] = tier
            with self._ready_lock:
                self.pending.add(tenant)
            self._publish(publisher, TENANT_CREATED, tenant_created(tenant, tier=tier))
        elif kind == "delete":
            # Never a tenant that got other events: a user event still in flight when the tenant is gone is
            # a legitimate unknown-tenant dead letter, not a loss.
            candidates = self._ready_tenants(lambda t: truth.tiers[t] != "enterprise" and t not in self.touched)
            if not candidates:
                return False
            tenant = self.random.choice(candidates)
            purge = number % 2 == 0
            truth.deleted[tenant] = purge
            self._publish(publisher, TENANT_DELETED, tenant_deleted(tenant, purge=purge))
        elif kind == "user":
            candidates = self._ready_tenants(lambda t: True)
            if not candidates:
                return False
            tenant = self.random.choice(candidates)
            self.touched.add(tenant)
            event_id = f"{tenant}-u{number}"
            truth.users[event_id] = tenant
            self._publish(publisher, USER_CREATED, {
                "event_id": event_id, "tenant_id": tenant, "occurred_at": datetime.now(UTC).isoformat(),
                "user_id": f"u{number}-{self.run_id}", "email": f"u{number}-{self.run_id}@example.com",
                "roles": ["developer"]})
        elif kind == "metric":
            candidates = self._ready_tenants(lambda t: True)
            if not candidates:
                return False
            tenant = self.random.choice(candidates)
            self.touched.add(tenant)
            workload = f"m{number}"
            truth.metrics[workload] = tenant
            self._publish(publisher, RESOURCE_METRICS, {
                "event_id": f"{tenant}-{workload}", "tenant_id": tenant,
                "occurred_at": datetime.now(UTC).isoformat(), "workload": workload,
                "cpu_cores": round(self.random.uniform(0, 8), 3), "memory_gib": round(self.random.uniform(0, 32), 3),
                "gpus": 0, "requests_per_s": round(self.random.uniform(0, 500), 2), "replicas": 2})
        elif kind == "compute":
            candidates = self._ready_tenants(lambda t: truth.tiers[t] == "enterprise")
            if not candidates:
                return False
            tenant = self.random.choice(candidates)
            name = f"r{number}"
            on_gpu = number % 2 == 0
            truth.compute[f"{tenant}.{name}"] = "gpu" if on_gpu else "cpu"
            spec: dict[str, Any] = (
                {"resources": {"gpu": {"type": "H100", "count": 1}}, "exclude_providers": ["kubernetes"]}
                if on_gpu else {"resources": {"vcpus": 2, "memory_gib": 4}, "providers": ["kubernetes"]})
            self._publish(publisher, COMPUTE_REQUESTS, {
                "event_id": f"{tenant}-{name}", "tenant_id": tenant, "occurred_at": datetime.now(UTC).isoformat(),
                "request_name": name, "duration_hours": COMPUTE_HOURS, "purpose": "batch", **spec})
        counters[kind] += 1
        return True

    def _publish(self, publisher: Publisher, topic: str, event: dict[str, Any]) -> None:
        publisher.send(topic, event)
        self.report.sent[topic] += 1

    def _watch_ready(self, stop: threading.Event) -> None:
        """Move tenants from pending to ready once the API shows all 7 resources ready (and give enterprise
        tenants the ServiceAccount their compute Pods need)."""
        while not stop.is_set():
            with self._ready_lock:
                pending = sorted(self.pending)
            for tenant in pending:
                with contextlib.suppress(Exception):  # the worker may be down: try again
                    if self.api().all_ready(tenant):
                        if self.truth.tiers[tenant] == "enterprise":
                            ensure_service_account(self.backends, tenant)
                        with self._ready_lock:
                            self.pending.discard(tenant)
                            self.ready.add(tenant)
            stop.wait(1.5)

    # -- faults -------------------------------------------------------------------------------------------

    def _outage(self, name: str) -> None:
        self.say(f"stopping {name} for {self.plan.outage_seconds:.0f}s")
        with stopped_service(name, self.ctx):
            time.sleep(self.plan.outage_seconds)
        self.report.outages.append(name)
        self.say(f"{name} restarted")

    def _second_worker(self) -> None:
        """A second worker of the same app joins (a rebalance), serves a while, and is killed for good."""
        second = self.start_worker(self._worker_env("b"), port=free_port())
        self.workers.append(second)
        second.wait_ready(300)
        self.say("a second worker serves; killing it in a while")
        time.sleep(self.random.uniform(3.0, 10.0))
        second.kill()
        self.budget.record()
        self.report.second_worker_killed = True

    # -- checks -------------------------------------------------------------------------------------------

    def _settled(self) -> bool:
        """Converged, and still so a few seconds later (a rebalance may be about to hide a tenant again)."""
        if self._still_pending():
            return False
        time.sleep(5.0)
        return not self._still_pending()

    def _still_pending(self) -> list[str]:
        try:
            return self._pending_items()
        except Exception as exc:  # a backend or the stand-in not answering yet: not converged
            return [f"check failed: {exc}"]

    def _pending_items(self) -> list[str]:
        """What has not converged yet (empty: everything did)."""
        if not self.serving():
            return ["a worker is not ready"]
        missing: list[str] = []
        for tenant in sorted(self.truth.tiers):
            status = self.status(tenant)
            if status is None:
                missing.append(f"{tenant}: no provisioning status")
                continue
            states = {name: entry["status"] for name, entry in status.get("resources", {}).items()}
            if tenant in self.truth.deleted:
                if set(states.values()) != {"deleted"}:
                    missing.append(f"{tenant}: deleting {states}")
            elif set(states) != set(RESOURCES) or not set(states.values()) <= {"ready", *REFUSED}:
                missing.append(f"{tenant}: {states}")
        for workload, tenant in sorted(self.truth.metrics.items()):
            code, body = self.read(f"/tenants/{tenant}/utilization")
            windows = (body or {}).get("workloads", {}).get(workload) if code == 200 else None
            if not windows:
                missing.append(f"{tenant}/{workload}: no utilization")
        final: set[str] = set()
        for request_id in sorted(self.truth.compute):
            code, body = self.read(f"/compute/provision/{request_id}")
            state = body.get("state") if code == 200 and isinstance(body, dict) else f"HTTP {code}"
            if state in FINAL_COMPUTE:
                final.add(request_id)
            else:
                missing.append(f"{request_id}: {state}")
        missing += self._live_allocations(final)
        if not missing:
            found, _ = command_keys(read_topic(self.plane.bootstrap, PROVISIONING_COMMANDS, timeout=5))
            missing += [f"user event {e}: no {r} command" for e, r in self._users_without_commands(found)]
        return missing

    def _users_without_commands(self, found: dict[str, set[str]]) -> list[tuple[str, str]]:
        return [(event_id, resource) for event_id, tenant in sorted(self.truth.users.items())
                for resource in USER_RESOURCES if f"{tenant}/{resource}/create_user/{event_id}" not in found]

    def _live_allocations(self, final: set[str]) -> list[str]:
        """Allocations the providers still hold for requests that are final (a leak once converged)."""
        live: list[str] = []
        prefixes = {request_id: token_prefix(request_id) for request_id in final}
        for allocation in standin_state(self.engine_url):
            for request_id, prefix in prefixes.items():
                if allocation["client_token"].startswith(prefix):
                    live.append(f"{request_id}: stand-in allocation {allocation['allocation_id']}")
        for pod in compute_pods(self.backends, set(self.truth.tiers)):
            token = pod["metadata"].get("labels", {}).get("compute.platform/client-token", "")
            for request_id, prefix in prefixes.items():
                if token.startswith(prefix):
                    live.append(f"{request_id}: Pod {pod['metadata']['namespace']}/{pod['metadata']['name']}")
        return live

    def _check(self) -> None:
        report, truth = self.report, self.truth
        patience = 120.0
        commands = read_topic(self.plane.bootstrap, PROVISIONING_COMMANDS, timeout=8)
        ids, _ = command_keys(commands)
        dead = read_topic(self.plane.bootstrap, self.env.get("DEAD_LETTER_TOPIC", "dead-letter-events"), timeout=5)
        report.dead_letters = Counter(str(d.get("reason")) for d in dead if isinstance(d, dict))
        ours = {t: [d for d in dead if isinstance(d, dict) and t in str(d.get("key"))] for t in truth.tiers}
        # lost: an event whose effect is missing
        for tenant in sorted(truth.tiers):
            for resource in RESOURCES:
                if f"{tenant}/{resource}/create" not in ids:
                    report.lost.append(f"tenant-created {tenant}: no {resource} create command "
                                       f"(dead letters: {[d.get('reason') for d in ours[tenant]]})")
            if tenant in truth.deleted:
                for resource in RESOURCES:
                    if f"{tenant}/{resource}/delete" not in ids:
                        report.lost.append(f"tenant-deleted {tenant}: no {resource} delete command")
        report.lost += [f"user-created {e}: no {r} command" for e, r in self._users_without_commands(ids)]
        for workload, tenant in sorted(truth.metrics.items()):
            code, body = self.read(f"/tenants/{tenant}/utilization", patience)
            windows = (body or {}).get("workloads", {}).get(workload, []) if code == 200 else []
            samples = sum(w["samples"] for w in windows)
            if samples == 0:
                report.lost.append(f"resource-metrics {tenant}/{workload}: no sample")
            elif samples > 1:
                report.duplicated.append(f"resource-metrics {tenant}/{workload}: {samples} samples of one event")
        # duplicated: two command ids for one effect
        for key, command_ids in sorted(ids.items()):
            if key.split("/")[0] in truth.tiers and len(command_ids) > 1:
                report.duplicated.append(f"command {key}: {sorted(command_ids)}")
        # the tables (through the API) and the backends
        names = names_in_backends(self.backends)
        for tenant in sorted(truth.tiers):
            status = self.status(tenant, patience) or {}
            resources = status.get("resources", {})
            for resource, entry in sorted(resources.items()):
                if entry["status"] in REFUSED:
                    report.refused.append(f"{tenant}/{resource}: {entry.get('last_error')}")
                    if not entry.get("last_error"):
                        report.not_converged.append(f"{tenant}/{resource}: failed without a reason")
            if tenant in truth.deleted:
                if status.get("overall") != "deleted":
                    report.not_converged.append(f"{tenant}: deleted event sent, overall {status.get('overall')}")
                kept = KEPT_WITHOUT_PURGE if not truth.deleted[tenant] else ()
                for resource in RESOURCES:
                    present = backend_name(resource, tenant) in names[resource]
                    if resource == "kubernetes":
                        present = present and not self.backends.namespace_gone(f"tenant-{tenant}")
                    if present != (resource in kept):
                        report.backend_mismatches.append(
                            f"{tenant} deleted (purge={truth.deleted[tenant]}): {resource} present={present}")
            else:
                states = {name: entry["status"] for name, entry in resources.items()}
                if set(states) != set(RESOURCES) or not set(states.values()) <= {"ready", *REFUSED}:
                    report.not_converged.append(f"{tenant}: {states}")
                for resource in RESOURCES:
                    ready = resources.get(resource, {}).get("status") == "ready"
                    if ready and backend_name(resource, tenant) not in names[resource]:
                        report.backend_mismatches.append(f"{tenant}: {resource} ready but not in the backend")
        # compute: final states, one allocation per request, nothing left
        final: set[str] = set()
        for request_id in sorted(truth.compute):
            code, body = self.read(f"/compute/provision/{request_id}", patience)
            state = str(body.get("state")) if code == 200 and isinstance(body, dict) else f"HTTP {code}"
            report.compute_states[state] += 1
            if state == "failed":
                error = str(body.get("error") or "")[:60]
                report.compute_failures[f"{body.get('termination_reason')}: {error}"] += 1
            if state in FINAL_COMPUTE:
                final.add(request_id)
            else:
                report.not_converged.append(f"compute {request_id}: {state}")
        report.leaked = self._live_allocations(final)
        per_request: Counter[str] = Counter()
        for allocation in standin_state(self.engine_url):
            for request_id in truth.compute:
                if allocation["client_token"].startswith(token_prefix(request_id)):
                    per_request[f"{request_id} (stand-in)"] += 1
        for pod in compute_pods(self.backends, set(truth.tiers)):
            token = pod["metadata"].get("labels", {}).get("compute.platform/client-token", "")
            for request_id in truth.compute:
                if token.startswith(token_prefix(request_id)):
                    per_request[f"{request_id} (Pods)"] += 1
        report.duplicated += [f"compute {key}: {n} live allocations" for key, n in per_request.items() if n > 1]

    # -- cleanup ------------------------------------------------------------------------------------------

    def _cleanup(self) -> None:
        """Stop the workers, release whatever the providers still hold for our requests, purge every tenant."""
        for worker in self.workers:
            worker.stop()
        tenants = set(self.truth.tiers)
        with contextlib.suppress(Exception):
            prefixes = [token_prefix(r) for r in self.truth.compute]
            for allocation in standin_state(self.engine_url):
                if any(allocation["client_token"].startswith(p) for p in prefixes):
                    standin_release(self.engine_url, allocation["allocation_id"])
        with contextlib.suppress(Exception):
            core = k8s.CoreV1Api(self.backends.kube())
            for pod in compute_pods(self.backends, tenants):
                core.delete_namespaced_pod(pod["metadata"]["name"], pod["metadata"]["namespace"])
        specs = [TenantSpec(tenant_id=t, name=f"E2E tenant {t}", tier=tier, owner_user_id=f"{t}-owner@example.com")
                 for t, tier in sorted(self.truth.tiers.items())]
        self.report.cleanup_errors = purge_tenants(self.backends.settings, specs)


@contextlib.contextmanager
def backend_clients(settings_env: dict[str, str]) -> Iterator[Backends]:
    from devstack.harness.tenant_provisioning import settings_from

    clients = Backends(settings_from(settings_env))
    try:
        yield clients
    finally:
        clients.close()


def worker_logs(tmp: Path, lines: int = 40) -> str:
    from devstack.process import log_tail

    return "\n".join(f"== {log}\n{log_tail(log, lines)}" for log in sorted(tmp.glob("worker-*.log")))
