"""The worker's compute runtime (``pipeline.compute.runtime``), built once from settings, and its lifecycle.

Shared by the compute agents and the compute routes (``web/compute.py``): one offer book, one record
store (writes go through the ``compute-records`` topic), one vault of undelivered access details per worker.
"""

from __future__ import annotations

import logging
from functools import cache

from mode import Service

from agents.runtime import topic
from pipeline.app import app
from pipeline.compute.access import install_secret_masking
from pipeline.compute.factory import build_runtime
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.runtime import ComputeRuntime
from pipeline.contract.topics import COMPUTE_RECORDS, PROVISIONING_EVENTS
from pipeline.events.models import ProvisioningStatusEvent
from pipeline.isolation import guarded
from tables.compute_records import compute_records
from tables.quotas import quotas

logger = logging.getLogger(__name__)


#: ``<app id>-compute-records``, keyed by tenant id: the records the compute-records agent writes to the table.
#: Declared by the app (created before it subscribes) and private to this app id, like a changelog.
records_topic = app.topic(
    f"{app.settings.app_id}-{COMPUTE_RECORDS}", internal=True, partitions=app.settings.topic_partitions,
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
)


async def _send_record(record: ComputeRecord) -> None:
    fut = await records_topic.send(key=record.tenant_id.encode(), value=record.model_dump_json().encode())
    await fut


async def _send_status(event: ProvisioningStatusEvent) -> None:
    fut = await topic(PROVISIONING_EVENTS).send(key=event.tenant_id.encode(), value=event.model_dump_json().encode())
    await fut


def _quota_gpus(tenant_id: str) -> int | None:
    quota = quotas.get(tenant_id)
    return quota.limits.gpus if quota is not None else None


@cache
def runtime() -> ComputeRuntime:
    return build_runtime(
        app.settings, table=compute_records, send_record=_send_record, send_status=_send_status,
        quota_gpus=_quota_gpus, quotas=quotas.get,
    )


@app.task
@guarded("compute-quotes")
async def initial_quote() -> None:
    """Merge the derivatives engine's quote into the offer book as the worker starts (then every
    COMPUTE_QUOTE_REFRESH_SECONDS, see agents/compute_sweep.py)."""
    await runtime().refresh_offers()


@app.service
class ComputeRuntimeService(Service):
    """Masks access secrets in every log record of the worker (its logging is configured by then), and
    stops the runtime with the worker: allocations in flight are cancelled (and release what they hold),
    pending record writes are sent, the engine session is closed."""

    async def on_start(self) -> None:
        install_secret_masking()

    async def on_stop(self) -> None:
        if runtime.cache_info().currsize:
            await runtime().close()
