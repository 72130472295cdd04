"""scaling-applied: what the Kubernetes API said about a workload's Deployment, into its scaling state."""

import logging
from typing import Any

from pydantic import ValidationError

from agents.runtime import dead_letter, topic
from agents.scaling_runtime import ENGINE, carry_out
from pipeline.app import app
from pipeline.contract.topics import SCALING_APPLIED
from pipeline.scaling.records import ApplyReport

logger = logging.getLogger(__name__)


@app.agent(topic(SCALING_APPLIED), concurrency=1)
async def scaling_applied(stream: Any) -> None:
    async for message in stream.events():
        try:
            report = ApplyReport.model_validate_json(message.value)
        except ValidationError as exc:
            await dead_letter(SCALING_APPLIED, message.value, message.key, "schema", str(exc))
            continue
        try:
            await carry_out(ENGINE.on_applied(report))
        except Exception:
            ENGINE.forget()  # a half-made change must not stay cached
            logger.exception("the Kubernetes report of %s/%s could not be recorded", report.tenant_id, report.workload)
