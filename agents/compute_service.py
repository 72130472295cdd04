"""The worker's compute runtime (``pipeline.compute.runtime``), built once from settings, and its lifecycle.

Shared by the compute agents and the compute routes (``web/compute/``): one offer book, one record
store (writes go through the ``compute-records`` topic), one vault of undelivered access details per worker.
"""

from __future__ import annotations

import logging

from mode import Service

from agents.runtime import AgentRuntime
from pipeline.app import ProvisioningApp
from pipeline.compute.access import install_secret_masking
from pipeline.compute.factory import build_runtime
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.runtime import ComputeRuntime
from pipeline.contract.topics import COMPUTE_RECORDS, PROVISIONING_EVENTS
from pipeline.events.models import ProvisioningStatusEvent
from pipeline.isolation import guarded
from pipeline.shared_cache import SharedCache
from pipeline.tenants.models import AnomalyLog, QuotaRecord
from pipeline.typed_table import TypedTable

logger = logging.getLogger(__name__)


class ComputeService:
    """The compute runtime of one worker (built on first use), and the topic its record writes go through."""

    def __init__(self, app: ProvisioningApp, io: AgentRuntime, records: TypedTable[ComputeRecord],
                 quotas: TypedTable[QuotaRecord], anomalies: TypedTable[AnomalyLog] | None = None,
                 shared_cache: SharedCache | None = None) -> None:
        self.app = app
        #: The workers' shared cache the engine's quotes go through (built by pipeline.worker; closed here).
        self.shared_cache = shared_cache
        self.settings = app.settings
        self.io = io
        self.records = records
        self.quotas = quotas
        self.anomalies = anomalies
        #: ``<app id>-compute-records``, keyed by tenant id: the records the compute-records agent writes to the
        #: table. Declared by the app (created before it subscribes) and private to this app id, like a changelog.
        self.records_topic = app.topic(
            f"{self.settings.app_id}-{COMPUTE_RECORDS}", internal=True, partitions=self.settings.topic_partitions,
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        )
        self._runtime: ComputeRuntime | None = None

    async def _send_record(self, record: ComputeRecord) -> None:
        fut = await self.records_topic.send(key=record.tenant_id.encode(), value=record.model_dump_json().encode())
        await fut

    async def _send_status(self, event: ProvisioningStatusEvent) -> None:
        await self.io.send(PROVISIONING_EVENTS, event.tenant_id, event)

    def _quota_gpus(self, tenant_id: str) -> int | None:
        quota = self.quotas.get(tenant_id)
        return quota.limits.gpus if quota is not None else None

    def _quarantined(self, tenant_id: str) -> list[str]:
        log = self.anomalies.get(tenant_id) if self.anomalies is not None else None
        return list(log.quarantined) if log is not None else []

    def runtime(self) -> ComputeRuntime:
        if self._runtime is None:
            self._runtime = build_runtime(
                self.settings, table=self.records, send_record=self._send_record, send_status=self._send_status,
                quota_gpus=self._quota_gpus, quotas=self.quotas.get, quarantined=self._quarantined,
                shared_cache=self.shared_cache,
            )
        return self._runtime

    async def close(self) -> None:
        """Stop the runtime if it was ever built, and close the shared cache's connection."""
        if self._runtime is not None:
            await self._runtime.close()
        if self.shared_cache is not None:
            await self.shared_cache.close()

    def register(self) -> None:
        """The first quote at start, and the service that masks secrets and stops the runtime with the worker."""
        compute = self

        @self.app.task
        @guarded("compute-quotes")
        async def initial_quote() -> None:
            """Merge the derivatives engine's quote into the offer book as the worker starts (then every
            COMPUTE_QUOTE_REFRESH_SECONDS, see agents/compute_sweep.py)."""
            await compute.runtime().refresh_offers()

        @self.app.service
        class ComputeRuntimeService(Service):
            """Masks access secrets in every log record of the worker (its logging is configured by then), and
            stops the runtime with the worker: allocations in flight are cancelled (and release what they
            hold), pending record writes are sent, the engine session is closed."""

            async def on_start(self) -> None:
                install_secret_masking()

            async def on_stop(self) -> None:
                await compute.close()
