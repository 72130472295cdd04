"""The worker process: every agent, table and service attached to the Faust app, and running it."""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
import sys

import faust
from mode import Service

import agents
from pipeline.app import app
from pipeline.bridge import Bridge, ensure_kafka_topics
from pipeline.contract.topics import kafka_topics
from pipeline.faust_consumer import check_faust_version
from pipeline.faust_tuning import tune_garbage_collector, use_event_loop
from pipeline.logs import configure, logging_config, quiet_libraries
from pipeline.scaling.snapshot_signing import require_key

logger = logging.getLogger(__name__)


def load_agents() -> None:
    """Import every module of ``agents/`` so its agents attach to the app."""
    for module in pkgutil.iter_modules(agents.__path__):
        importlib.import_module(f"agents.{module.name}")


@app.service
class BridgeService(Service):
    """The Pulsar <-> Kafka bridge, inside the worker (BRIDGE_ENABLED=false to run it on its own)."""

    _bridge: Bridge | None = None

    async def on_start(self) -> None:
        if app.settings.bridge_enabled:
            self._bridge = Bridge(app.settings)
            await self._bridge.start()

    async def on_stop(self) -> None:
        if self._bridge is not None:
            await self._bridge.stop()


def run_worker() -> None:
    check_faust_version()
    log_level, log_format = app.settings.log_level, app.settings.log_format
    quiet_libraries(log_level)  # before Faust configures logging: the topic creation below logs too
    if log_format == "json":  # every line JSON, those before Faust's logging set-up included
        configure(log_level, log_format)
    from web.peers import PeerConfigError, peer_secret

    try:
        peer_secret(app.settings)  # the internal endpoints are served by every worker
    except PeerConfigError as exc:
        sys.stderr.write(f"refusing to start: {exc}\n")
        raise SystemExit(2) from None
    try:  # before anything starts: a worker that cannot sign its forecaster snapshots must not run
        require_key(app.settings)
    except ValueError as exc:
        raise SystemExit(f"cannot start the worker: {exc}") from None
    # Faust subscribes only to topics that exist when it starts: create them first, with the partition
    # count every per-tenant table shares.
    asyncio.run(ensure_kafka_topics(app.settings, kafka_topics(app.settings.dead_letter_topic)))
    # Faust creates its data folder but not the folders above it: DATA_DIR/<APP_ID>/ needs DATA_DIR.
    app.settings.state_dir.mkdir(parents=True, exist_ok=True)
    load_agents()
    use_event_loop(app.settings.event_loop)
    tune_garbage_collector()
    # quiet: with json, Faust's start-up banner (plain text on stdout) would break the one-object-per-line stream.
    faust.Worker(app, loglevel=log_level, logging_config=logging_config(log_level, log_format),
                 quiet=log_format == "json").execute_from_commandline()
