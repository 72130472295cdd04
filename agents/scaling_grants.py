"""scaling-grants: keep a workload's fair-share grant; re-make its last decision when the grant changes it."""

import logging
from typing import Any

from pydantic import ValidationError

from agents.runtime import dead_letter, topic
from agents.scaling_runtime import ENGINE, carry_out
from pipeline.app import app
from pipeline.contract.topics import SCALING_GRANTS
from pipeline.scaling.records import Grant

logger = logging.getLogger(__name__)


@app.agent(topic(SCALING_GRANTS), concurrency=1)
async def scaling_grants(stream: Any) -> None:
    async for message in stream.events():
        try:
            grant = Grant.model_validate_json(message.value)
        except ValidationError as exc:
            await dead_letter(SCALING_GRANTS, message.value, message.key, "schema", str(exc))
            continue
        try:
            await carry_out(ENGINE.on_grant(grant))
        except Exception:
            ENGINE.forget()  # a half-made change must not stay cached
            logger.exception("the grant of %s/%s could not be applied", grant.tenant_id, grant.workload)
