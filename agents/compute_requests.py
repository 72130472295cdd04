"""compute-request-events: submit the request of an existing tenant; its allocation runs in the background."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.app import ProvisioningApp
from pipeline.compute.quota import ComputeQuotaRefused
from pipeline.contract.topics import COMPUTE_REQUESTS
from pipeline.events.decode import Invalid, decode
from pipeline.events.models import ComputeRequested
from pipeline.metrics import EVENTS_DUPLICATE, EVENTS_PROCESSED
from pipeline.outputs import Refused
from pipeline.tenants.logic import require_tenant
from tables import processed_events

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores, compute, dedupe = deps.io, deps.stores, deps.compute, deps.io.dedupe

    @app.agent(io.topic(COMPUTE_REQUESTS), concurrency=1)
    async def compute_requests(stream: Any) -> None:
        async for message in stream.events():
            event = decode(message.value, ComputeRequested)
            if isinstance(event, Invalid):
                await io.dead_letter(COMPUTE_REQUESTS, message.value, message.key, event.reason, event.detail)
                continue
            dedupe_key = processed_events.key(COMPUTE_REQUESTS, event.tenant_id, event.event_id)
            if dedupe.seen(dedupe_key):
                EVENTS_DUPLICATE.labels(COMPUTE_REQUESTS).inc()
                continue
            try:
                require_tenant(stores, event.tenant_id)
                await compute.runtime().submit_event(event)
            except ComputeQuotaRefused as exc:
                await io.dead_letter(COMPUTE_REQUESTS, message.value, message.key, exc.refusal.code, str(exc))
            except Refused as refused:
                await io.dead_letter(COMPUTE_REQUESTS, message.value, message.key, refused.reason, refused.detail)
            except Exception as exc:
                await io.handler_failed(COMPUTE_REQUESTS, message, exc)
            else:
                EVENTS_PROCESSED.labels(COMPUTE_REQUESTS).inc()
            dedupe.mark(dedupe_key)
