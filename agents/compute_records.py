"""<app id>-compute-records: write each compute record into the table (records only move forward), then announce
the budget-alert thresholds the tenant's compute spend reached (``pipeline/compute/budget_alerts.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeline.app import ProvisioningApp
from pipeline.compute import budget_alerts
from pipeline.compute.costs import costs_of
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.record_store import apply_record
from pipeline.contract.topics import PROVISIONING_EVENTS
from pipeline.isolation import isolated

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, compute, records = deps.io, deps.compute, deps.tables.compute_records
    alerts, settings = deps.tables.budget_alerts, deps.settings
    thresholds = settings.budget_alert_thresholds
    records_topic = compute.records_topic

    async def check_budget(tenant_id: str) -> None:
        """Send the budget-alert events of thresholds newly reached, then record them (in this tenant's
        partition: a redelivery of the record finds them recorded)."""
        service = compute.runtime().service
        if not thresholds or service.policy(tenant_id).budget_usd is None:
            return  # nothing to announce: no need to read the tenant's records on the agent's hot path
        costs = costs_of(service, tenant_id, settings.compute_budget_period)
        state = alerts.get(tenant_id)
        sent = budget_alerts.due(costs, state, thresholds)
        for threshold in sent:
            await io.send(PROVISIONING_EVENTS, tenant_id, budget_alerts.alert_event(costs, threshold))
        if sent:
            alerts.put(tenant_id, budget_alerts.recorded(costs, state, sent))

    @app.agent(records_topic, concurrency=1)
    async def compute_record_writer(stream: Any) -> None:
        async for message in stream.events():
            try:
                record = ComputeRecord.model_validate_json(message.value)
            except ValidationError as exc:
                await io.dead_letter(records_topic.get_topic_name(), message.value, message.key, "schema", str(exc))
                continue
            try:
                apply_record(records, record)
                compute.runtime().store.applied(record)
            except Exception as exc:
                await io.handler_failed(records_topic.get_topic_name(), message, exc)
                continue
            # A failed budget check must not dead-letter the record it follows (written already): counted, logged.
            with isolated("budget-alerts", record.tenant_id):
                await check_budget(record.tenant_id)
