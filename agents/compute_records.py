"""compute-records: write each compute record into the table (records only move forward)."""

from typing import Any

from pydantic import ValidationError

from agents.compute_service import runtime
from agents.runtime import dead_letter, topic
from pipeline.app import app
from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.runtime import apply_record
from pipeline.topics import COMPUTE_RECORDS
from tables.compute_records import compute_records


@app.agent(topic(COMPUTE_RECORDS), concurrency=1)
async def compute_record_writer(stream: Any) -> None:
    async for message in stream.events():
        try:
            record = ComputeRecord.model_validate_json(message.value)
        except ValidationError as exc:
            await dead_letter(COMPUTE_RECORDS, message.value, message.key, "schema", str(exc))
            continue
        apply_record(compute_records, record)
        runtime().store.applied(record)
