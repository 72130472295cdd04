"""resource-metrics: update the usage table and the tumbling-window utilization table."""

from typing import Any

from agents.runtime import process, topic
from agents.stores import STORES
from pipeline.app import app
from pipeline.events.models import ResourceMetrics
from pipeline.outputs import Emit
from pipeline.tenants.logic import require_tenant
from pipeline.topics import RESOURCE_METRICS
from pipeline.usage import WindowStats, record_sample, workload_key
from tables.usage import usage
from tables.utilization import table as utilization


def _record(event: ResourceMetrics) -> list[Emit]:
    require_tenant(STORES, event.tenant_id)
    usage.put(event.tenant_id, record_sample(usage.get(event.tenant_id), event))
    key = workload_key(event.tenant_id, event.workload)
    current = WindowStats.model_validate(utilization[key].current() or {})
    utilization[key] = current.add(event).model_dump()
    return []


@app.agent(topic(RESOURCE_METRICS), concurrency=1)
async def resource_metrics(stream: Any) -> None:
    async for message in stream.events():
        await process(message, RESOURCE_METRICS, ResourceMetrics, _record)
