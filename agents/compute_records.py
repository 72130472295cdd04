"""<app id>-compute-records: write each compute record into the table (records only move forward)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeline.app import ProvisioningApp
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.record_store import apply_record

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, compute, records = deps.io, deps.compute, deps.tables.compute_records
    records_topic = compute.records_topic

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
