"""The Faust application class, and how it is configured from settings.

Nothing here builds an app at import time: the composition root (``pipeline/worker.py``, ``build_worker``)
creates it, declares the tables (``tables/``) and the agents (``agents/``) on it, and hands it the function
that installs the web layer (``web/``) on its aiohttp server when the server initialises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from faust.types import ProducerT
from faust.types.web import Web

from pipeline.config import Settings
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

    def on_webserver_init(self, web: Web) -> None:
        if self.web_installer is not None:
            self.web_installer(web)


def create_app(settings: Settings) -> ProvisioningApp:
    app = ProvisioningApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store=settings.store,
        datadir=str(settings.data_dir),
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.kafka_group_instance_id,
        producer_acks=-1,
        broker_commit_every=500,
        broker_commit_interval=timedelta(seconds=1),
        table_cleanup_interval=timedelta(seconds=30),
        table_standby_replicas=0,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
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
