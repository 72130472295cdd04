"""resource-metrics: usage, utilization windows, compute activity and the scaling engine, a batch at a time.

The only agent on the topic, so Faust's per-event machinery runs once per sample. It takes what arrived
within METRICS_BATCH_SECONDS (at most METRICS_BATCH_MAX events) and, per tenant of the batch, writes the
usage record once and each touched utilization window once, and hands the new samples to compute activity
(idle detection) and to the scaling engine. The windows they close go to the forecaster process tenant by
tenant, to be learned and forecast while the loop goes on with the next tenants; then, per tenant, the
engine decides and the decisions leave together. The batch is acknowledged after all of that:
at-least-once, and a redelivered sample is recognised by its window (``pipeline.usage.fold_samples``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faust.types import EventT

from agents.runtime import now, writing_as
from pipeline.app import ProvisioningApp
from pipeline.contract.topics import RESOURCE_METRICS
from pipeline.events.decode import Invalid, decode
from pipeline.events.models import ResourceMetrics
from pipeline.metrics import EVENTS_DUPLICATE, EVENTS_PROCESSED
from pipeline.outputs import Refused
from pipeline.scaling.windows import Accumulated
from pipeline.tenants.logic import require_tenant
from pipeline.tenants.quota_marks import lift_marks, without_marks
from pipeline.usage import UsageRecord, fold_samples

if TYPE_CHECKING:
    from agents.deps import AgentDeps


class MetricsBatches:
    """What the agent does with a batch: group the samples by tenant, fold each tenant's into its tables."""

    def __init__(self, deps: AgentDeps) -> None:
        self.io = deps.io
        self.stores = deps.stores
        self.usage = deps.tables.usage
        self.utilization = deps.tables.utilization
        self.compute = deps.compute
        self.scaling = deps.scaling

    async def decode_by_tenant(
        self, events: Sequence[EventT[Any]],
    ) -> dict[str, list[tuple[EventT[Any], ResourceMetrics]]]:
        """The valid samples of a batch grouped by tenant, in arrival order; the invalid ones are dead-lettered."""
        by_tenant: dict[str, list[tuple[EventT[Any], ResourceMetrics]]] = {}
        for event in events:
            sample = decode(event.value, ResourceMetrics)
            if isinstance(sample, Invalid):
                await self.io.dead_letter(RESOURCE_METRICS, event.value, event.key, sample.reason, sample.detail)
            else:
                by_tenant.setdefault(sample.tenant_id, []).append((event, sample))
        return by_tenant

    async def lift_quota_marks(self, usage: UsageRecord) -> None:
        """Lift the over-quota marks this usage is back under (rare: only a marked tenant's samples get here
        with anything to do); the announcements are acknowledged before the record changes, and the record is
        read again after that wait (another agent may have changed it meanwhile)."""
        quotas, tenant_id = self.stores.quotas, usage.tenant_id
        lifted, emits = lift_marks(quotas.get(tenant_id), usage, now())
        if not lifted:
            return
        await self.io.emit_all(emits)
        latest = quotas.get(tenant_id)
        changed = without_marks(latest, lifted, now()) if latest is not None else None
        if changed is not None:
            quotas.put(tenant_id, changed)

    async def record_tenant_samples(
        self, tenant_id: str, group: list[tuple[EventT[Any], ResourceMetrics]],
    ) -> Accumulated:
        """Fold one tenant's samples into its tables; the scaling engine's windows they closed are returned."""
        try:
            require_tenant(self.stores, tenant_id)
        except Refused as refused:
            for event, _ in group:
                await self.io.dead_letter(RESOURCE_METRICS, event.value, event.key, refused.reason, refused.detail)
            return Accumulated()
        utilization = self.utilization
        with writing_as(group[-1][0]):
            folded = fold_samples([sample for _, sample in group], self.usage.get(tenant_id),
                                  utilization.stored_window, utilization.window)
            compute = self.compute.runtime()
            for sample in folded.fresh:
                compute.record_metrics(sample)
            # Before the windows are written: an engine that has no open window for a workload resumes it
            # from the stored one, which must not count this batch yet.
            accumulated = self.scaling.accumulate_samples(folded.fresh, folded.placed, folded.window_seconds)
            if folded.usage is not None:
                self.usage.put(tenant_id, folded.usage)
                await self.lift_quota_marks(folded.usage)
            for (key, start), record in folded.records.items():
                utilization.store_record(key, start, record)
        EVENTS_DUPLICATE.labels(RESOURCE_METRICS).inc(folded.duplicates)
        EVENTS_PROCESSED.labels(RESOURCE_METRICS).inc(len(folded.fresh))
        return accumulated


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, scaling, settings = deps.io, deps.scaling, deps.settings
    batches = MetricsBatches(deps)

    # A whole batch may wait while one is processed: Faust delivers records while the loop waits for the
    # forecaster process, and the next batch is ready when this one is done (with Faust's 4,096, a fraction).
    @app.agent(io.topic(RESOURCE_METRICS, buffer=settings.metrics_batch_max), concurrency=1)
    async def resource_metrics(stream: Any) -> None:
        async for events in stream.take_events(settings.metrics_batch_max, within=settings.metrics_batch_seconds):
            # Each tenant's closed windows go to the forecaster process as soon as they are folded: it learns
            # them while this loop folds the next tenants and decides on the previous ones.
            recorded = []
            for tenant_id, group in (await batches.decode_by_tenant(events)).items():
                try:
                    accumulated = await batches.record_tenant_samples(tenant_id, group)
                except Exception as exc:  # this tenant's samples are dead-lettered, the other tenants go on
                    for event, _ in group:
                        await io.handler_failed(RESOURCE_METRICS, event, exc)
                    continue
                recorded.append((group[-1][0], accumulated, scaling.learn_windows(accumulated.closed)))
                await asyncio.sleep(0)  # let Faust deliver and the other agents in between tenants
            sent: list[asyncio.Future[Any]] = []
            for last_event, accumulated, learning in recorded:
                results = await learning
                if not accumulated.closed and not accumulated.outcome:
                    continue
                with writing_as(last_event):
                    decided = scaling.finish_windows(accumulated, results)
                # Sent before anything else may run: a decision another agent makes meanwhile for the same
                # workload must come after this one (Kubernetes calls are queued in decision order).
                sent += await scaling.send_decisions(decided)
                await asyncio.sleep(0)  # let the other agents in between tenants
            await scaling.wait_for_kafka(sent)
