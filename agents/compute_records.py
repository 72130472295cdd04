"""<app id>-compute-records: write each compute record into the table (records only move forward)."""

from typing import Any

from pydantic import ValidationError

from agents.compute_service import records_topic, runtime
from agents.runtime import dead_letter, handler_failed
from pipeline.app import app
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.record_store import apply_record
from tables.compute_records import compute_records


@app.agent(records_topic, concurrency=1)
async def compute_record_writer(stream: Any) -> None:
    async for message in stream.events():
        try:
            record = ComputeRecord.model_validate_json(message.value)
        except ValidationError as exc:
            await dead_letter(records_topic.get_topic_name(), message.value, message.key, "schema", str(exc))
            continue
        try:
            apply_record(compute_records, record)
            runtime().store.applied(record)
        except Exception as exc:
            await handler_failed(records_topic.get_topic_name(), message, exc)
