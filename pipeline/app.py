"""The Faust application class, and how it is configured from settings.

Nothing here builds an app at import time: the composition root (``pipeline/worker.py``, ``build_worker``)
creates it, declares the tables (``tables/``) and the agents (``agents/``) on it, and hands it the function
that installs the web layer (``web/``) on its aiohttp server when the server initialises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from faust.types import ProducerT, TopicT
from faust.types.web import Web
from yarl import URL

from pipeline.config import Settings
from pipeline.connections import faust_broker_credentials
from pipeline.faust_adapter import StateResetAwareTableManager
from pipeline.faust_consumer import EagerDeliveryApp, drain_fully_on_flush
from pipeline.faust_tuning import QuietMonitor

logger = logging.getLogger(__name__)

#: Table writes (changelog records) waiting to be produced before Faust stops delivering messages to every
#: agent until they are (Faust's default is 100). A metrics batch writes hundreds of windows and states at
#: once; with 100, each such batch stalled the tenant-created agent too (docs/benchmarks.md section 2).
PRODUCER_BUFFER_MESSAGES = 20_000


class ProvisioningApp(EagerDeliveryApp):
    """A Faust app whose web server also serves the REST API, the dashboard, /health, /ready, /metrics.

    Its Kafka consumer delivers messages without Faust's per-message tasks (``pipeline/faust_consumer.py``).
    """

    settings: Settings
    #: Installs the web layer on Faust's aiohttp server (set by the composition root before the worker starts).
    web_installer: Callable[[Web], None] | None = None

    def _new_producer(self) -> ProducerT:
        producer = super()._new_producer()
        producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
        return drain_fully_on_flush(producer)

    def topic(self, *topics: str, config: Mapping[str, Any] | None = None, **kwargs: Any) -> TopicT:
        """Faust's topic, with ``min.insync.replicas`` in the configuration of the topics Faust creates (table
        changelogs) when TOPIC_MIN_INSYNC_REPLICAS is set."""
        return super().topic(*topics, config=topic_config(self.settings, config), **kwargs)

    def on_webserver_init(self, web: Web) -> None:
        if self.web_installer is not None:
            self.web_installer(web)


def topic_config(settings: Settings, config: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
    """A topic's configuration with the service's ``min.insync.replicas`` (an explicit value wins)."""
    if settings.topic_min_insync_replicas is None:
        return config
    return {"min.insync.replicas": str(settings.topic_min_insync_replicas), **(config or {})}


def create_app(settings: Settings) -> ProvisioningApp:
    advertised = settings.advertised_url()
    logger.debug("advertising %s to the other workers (bound to %s)", advertised, settings.web_host)
    app = ProvisioningApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        broker_credentials=faust_broker_credentials(settings),
        store=settings.store,
        # Per app id: the RocksDB files are named by table only, so two app ids sharing a folder would read each
        # other's state (and offsets) and stop at recovery with a ConsistencyError.
        datadir=str(settings.state_dir),
        TableManager=StateResetAwareTableManager,
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.kafka_group_instance_id,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        # heartbeats well inside the session (Kafka wants at most a third of it)
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_seconds / 3),
        producer_acks=-1,
        producer_linger=settings.kafka_producer_linger_ms / 1000.0,
        broker_commit_every=500,
        broker_commit_interval=timedelta(seconds=1),
        table_cleanup_interval=timedelta(seconds=30),
        table_standby_replicas=settings.table_standby_replicas,
        web_enabled=True,
        web_bind=settings.web_host,
        # What peers are told (the partition assignor's metadata) and what routing compares with: never the
        # bind address, which may be a wildcard (web/routing.py).
        web_host=URL(advertised).host,
        web_port=settings.web_port,
        canonical_url=advertised,
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        stream_wait_empty=False,
        Monitor=QuietMonitor,
    )
    app.settings = settings
    return app


def table_options(help_text: str, **extra: Any) -> dict[str, Any]:
    """Options shared by every table: string keys and JSON values (Faust serializes both as JSON)."""
    return {"key_type": str, "help": help_text, **extra}
