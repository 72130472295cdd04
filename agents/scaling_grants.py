"""scaling-grants: keep a workload's fair-share grant; re-make its last decision when the grant changes it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_GRANTS
from pipeline.scaling.records import Grant

if TYPE_CHECKING:
    from agents.deps import AgentDeps

logger = logging.getLogger(__name__)


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, scaling = deps.io, deps.scaling
    engine = scaling.engine

    @app.agent(io.topic(SCALING_GRANTS), concurrency=1)
    async def scaling_grants(stream: Any) -> None:
        async for message in stream.events():
            try:
                grant = Grant.model_validate_json(message.value)
            except ValidationError as exc:
                await io.dead_letter(SCALING_GRANTS, message.value, message.key, "schema", str(exc))
                continue
            try:
                await scaling.carry_out(engine.on_grant(grant))
            except Exception:
                engine.forget()  # a half-made change must not stay cached
                logger.exception("the grant of %s/%s could not be applied", grant.tenant_id, grant.workload)
