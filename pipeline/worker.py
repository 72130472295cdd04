"""The worker's composition root: ``build_worker(settings)`` puts the whole worker together, ``run_worker`` runs it.

Everything the worker is made of is created here, once, and handed down: the Faust app, its tables
(``tables.declare``), the agents' runtime objects (provisioners, executor, compute runtime, scaling runtime),
every agent module (:data:`AGENT_MODULES`, each declaring its agents and timers with ``register(app, deps)``),
the Pulsar bridge service, and the web layer (``web.server.mount``, installed when Faust's web server
initialises). No library module builds any of them at import time. Tests that need a worker in-process build
it with the same function.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from types import ModuleType

import faust
from faust.types.web import Web
from mode import Service
from yarl import URL

import tables
from agents import (
    compute_records,
    compute_requests,
    compute_sweep,
    executor,
    provisioning_results,
    quota_exceeded,
    quota_update,
    reconciler,
    resource_anomaly,
    resource_metrics,
    scaling_applied,
    scaling_demands,
    scaling_grants,
    scaling_policies,
    scaling_request,
    scaling_ticks,
    tenant_created,
    tenant_deleted,
    user_created,
    user_deleted,
)
from agents.backends import Backends
from agents.compute_service import ComputeService
from agents.deps import AgentDeps
from agents.executor import Executor
from agents.runtime import AgentRuntime
from agents.scaling_runtime import ScalingRuntime
from pipeline.app import ProvisioningApp, create_app
from pipeline.bridge import Bridge
from pipeline.bridge.topics import PartitionCountMismatch, TopicAdministrationFailed, ensure_kafka_topics
from pipeline.compute import cost_metrics
from pipeline.config import Settings, get_settings
from pipeline.contract.topics import TENANT_CREATED, kafka_topics
from pipeline.faust_consumer import check_faust_version, consumer_lag
from pipeline.faust_tuning import tune_garbage_collector, use_event_loop
from pipeline.logs import configure, logging_config, quiet_libraries
from pipeline.provisioners.reachability import log_missing_backends
from pipeline.provisioners.registry import build_provisioners
from pipeline.readiness import is_ready
from pipeline.scaling.snapshot_signing import require_key
from pipeline.shared_cache import build_shared_cache
from web import compute as compute_web
from web import costs as costs_web
from web import scaling as scaling_web
from web.faust_state import (
    FaustCommandGateway,
    FaustStateReader,
    build_planner,
    internal_routes,
    owner_of_tenant,
    readable,
    watched_tables,
)
from web.peer_client import PeerClient
from web.peers import PeerConfigError, peer_secret
from web.routing import peer_urls
from web.server import mount

logger = logging.getLogger(__name__)

#: Every agent module of the worker, in the order their agents are declared (the order ``agents/`` used to be
#: imported in). A new agent module is added here.
AGENT_MODULES: tuple[ModuleType, ...] = (
    compute_records,
    compute_requests,
    compute_sweep,
    executor,
    provisioning_results,
    quota_exceeded,
    quota_update,
    reconciler,
    resource_anomaly,
    resource_metrics,
    scaling_applied,
    scaling_demands,
    scaling_grants,
    scaling_policies,
    scaling_request,
    scaling_ticks,
    tenant_created,
    tenant_deleted,
    user_created,
    user_deleted,
)


@dataclass(frozen=True)
class Worker:
    """A worker put together: the Faust app with everything declared on it, and what was declared."""

    app: ProvisioningApp
    settings: Settings
    deps: AgentDeps

    @property
    def tables(self) -> tables.Tables:
        return self.deps.tables


def build_worker(settings: Settings) -> Worker:
    """Create the Faust app and declare the worker's tables, agents, timers and services on it; the web layer
    is installed on its aiohttp server when that initialises (:func:`mount_web`). Nothing is started."""
    app = create_app(settings)
    if settings.kubernetes_disabled_reason is not None:
        # Said once here; each skipped command and advisory decision carries the reason as well.
        logger.warning("%s", settings.kubernetes_disabled_reason)
    app.service(bridge_service(settings))
    app.service(backend_check_service(settings))
    declared = tables.declare(app)
    io = AgentRuntime(app, declared.processed_events)
    io.register()
    stores = declared.stores
    backends = Backends(settings, build_provisioners)
    # One cache shared by every worker (Ignite; NullCache when SHARED_CACHE_ENABLED is off), built here and handed
    # to the compute runtime, which asks the derivatives engine for quotes through it.
    shared_cache = build_shared_cache(settings)
    compute = ComputeService(app, io, declared.compute_records, declared.quotas, declared.anomalies,
                             shared_cache=shared_cache)
    compute.register()
    scaling = ScalingRuntime(app, io, declared)
    scaling.register()
    deps = AgentDeps(
        settings=settings, tables=declared, stores=stores, io=io, backends=backends,
        executor=Executor(settings, stores, io, backends, declared.anomalies), compute=compute, scaling=scaling,
    )
    for module in AGENT_MODULES:
        module.register(app, deps)
    worker = Worker(app=app, settings=settings, deps=deps)
    app.web_installer = lambda web: mount_web(worker, web)
    return worker


def mount_web(worker: Worker, web: Web) -> None:
    """Install the web layer on the worker's aiohttp server (Faust's ``on_webserver_init``)."""
    app, deps, settings = worker.app, worker.deps, worker.settings
    web_app = web.web_app  # type: ignore[attr-defined]  # Faust's aiohttp driver's Application
    declared, io = deps.tables, deps.io
    tenant_created_topic = io.topic(TENANT_CREATED)

    def owner(tenant_id: str) -> URL | None:
        return owner_of_tenant(app, tenant_created_topic, tenant_id)

    # One HTTP session for every call to another worker, closed with the web server.
    peer_client = PeerClient(settings.peer_network_encrypted)

    async def close_peer_client(_web_app: object) -> None:
        await peer_client.close()

    web_app.on_cleanup.append(close_peer_client)
    runtime = deps.compute.runtime
    period = settings.compute_budget_period
    state = {**readable(declared, runtime), "compute-costs": costs_web.ComputeCostsView(runtime, period)}
    cost_metrics.register(cost_metrics.CostCollector(
        lambda: runtime().service, period, cost_metrics.labelled_tenants(settings.compute_tenant_policies)))
    reader = FaustStateReader(
        settings, state, declared.tenants, [*watched_tables(declared).values(), declared.compute_records],
        owner=owner, peers=lambda: peer_urls(app), peer_client=peer_client,
    )
    gateway = FaustCommandGateway(io.send)

    def readiness() -> tuple[bool, str]:
        return is_ready(app)

    extra_operations = [
        *compute_web.worker_operations(app, deps.compute.runtime(), deps.compute.records_topic,
                                       declared.tenants.get, web_app, peer_client),
        *scaling_web.worker_operations(
            app, scaling_web.FaustScalingBackend(app, deps.scaling.engine, owner, io.send), reader,
            declared.scaling_decisions, web_app, peer_client,
        ),
    ]
    mount(web_app, settings, reader, gateway, readiness, lambda: consumer_lag(app),
          build_planner(deps.backends.provisioners), extra_operations,
          internal_routes(settings, state, declared.tenants))


def bridge_service(settings: Settings) -> type[Service]:
    """The Pulsar <-> Kafka bridge, inside the worker (BRIDGE_ENABLED=false to run it on its own)."""

    class BridgeService(Service):
        _bridge: Bridge | None = None

        async def on_start(self) -> None:
            if settings.bridge_enabled:
                self._bridge = Bridge(settings)
                await self._bridge.start()

        async def on_stop(self) -> None:
            if self._bridge is not None:
                await self._bridge.stop()

    return BridgeService


def backend_check_service(settings: Settings) -> type[Service]:
    """One log line per provisioning backend that does not answer when the worker starts, checked in the
    background: the worker does not wait for them (the executor waits per command, ``waiting``)."""

    class BackendCheckService(Service):
        async def on_start(self) -> None:
            if settings.executor_enabled:
                self.add_future(log_missing_backends(settings))

    return BackendCheckService


def run_worker() -> None:
    settings = get_settings()
    check_faust_version()
    log_level, log_format = settings.log_level, settings.log_format
    quiet_libraries(log_level)  # before Faust configures logging: the topic creation below logs too
    if log_format == "json":  # every line JSON, those before Faust's logging set-up included
        configure(log_level, log_format)
    try:
        peer_secret(settings)  # the internal endpoints are served by every worker
    except PeerConfigError as exc:
        sys.stderr.write(f"refusing to start: {exc}\n")
        raise SystemExit(2) from None
    try:  # before anything starts: a worker that cannot sign its forecaster snapshots must not run
        require_key(settings)
    except ValueError as exc:
        raise SystemExit(f"cannot start the worker: {exc}") from None
    # Faust subscribes only to topics that exist when it starts: create them first, with the partition
    # count every per-tenant table shares.
    try:
        asyncio.run(ensure_kafka_topics(settings, kafka_topics(settings.dead_letter_topic)))
    except (PartitionCountMismatch, TopicAdministrationFailed) as exc:
        raise SystemExit(f"cannot start the worker: {exc}") from None
    # Faust creates its data folder but not the folders above it: DATA_DIR/<APP_ID>/ needs DATA_DIR.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    worker = build_worker(settings)
    use_event_loop(settings.event_loop)
    tune_garbage_collector()
    # quiet: with json, Faust's start-up banner (plain text on stdout) would break the one-object-per-line stream.
    faust.Worker(worker.app, loglevel=log_level, logging_config=logging_config(log_level, log_format),
                 quiet=log_format == "json").execute_from_commandline()
