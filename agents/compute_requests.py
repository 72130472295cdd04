"""compute-request-events: submit the request of an existing tenant; its allocation runs in the background."""

from typing import Any

from agents.compute_service import runtime
from agents.runtime import dead_letter, handler_failed, topic
from agents.stores import STORES
from pipeline.app import app
from pipeline.compute.quota import ComputeQuotaRefused
from pipeline.contract.topics import COMPUTE_REQUESTS
from pipeline.events.decode import Invalid, decode
from pipeline.events.models import ComputeRequested
from pipeline.metrics import EVENTS_DUPLICATE, EVENTS_PROCESSED
from pipeline.outputs import Refused
from pipeline.tenants.logic import require_tenant
from tables import processed_events


@app.agent(topic(COMPUTE_REQUESTS), concurrency=1)
async def compute_requests(stream: Any) -> None:
    async for message in stream.events():
        event = decode(message.value, ComputeRequested)
        if isinstance(event, Invalid):
            await dead_letter(COMPUTE_REQUESTS, message.value, message.key, event.reason, event.detail)
            continue
        dedupe_key = processed_events.key(COMPUTE_REQUESTS, event.tenant_id, event.event_id)
        if processed_events.seen(dedupe_key):
            EVENTS_DUPLICATE.labels(COMPUTE_REQUESTS).inc()
            continue
        try:
            require_tenant(STORES, event.tenant_id)
            await runtime().submit_event(event)
        except ComputeQuotaRefused as exc:
            await dead_letter(COMPUTE_REQUESTS, message.value, message.key, exc.refusal.code, str(exc))
        except Refused as refused:
            await dead_letter(COMPUTE_REQUESTS, message.value, message.key, refused.reason, refused.detail)
        except Exception as exc:
            await handler_failed(COMPUTE_REQUESTS, message, exc)
        else:
            EVENTS_PROCESSED.labels(COMPUTE_REQUESTS).inc()
        processed_events.mark(dedupe_key)
