"""scaling-applied: what the Kubernetes API said about a workload's Deployment, into its scaling state."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_APPLIED
from pipeline.scaling.records import ApplyReport

if TYPE_CHECKING:
    from agents.deps import AgentDeps

logger = logging.getLogger(__name__)


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, scaling = deps.io, deps.scaling
    engine = scaling.engine

    @app.agent(io.topic(SCALING_APPLIED), concurrency=1)
    async def scaling_applied(stream: Any) -> None:
        async for message in stream.events():
            try:
                report = ApplyReport.model_validate_json(message.value)
            except ValidationError as exc:
                await io.dead_letter(SCALING_APPLIED, message.value, message.key, "schema", str(exc))
                continue
            try:
                await scaling.carry_out(engine.on_applied(report))
            except Exception:
                engine.forget()  # a half-made change must not stay cached
                logger.exception("the Kubernetes report of %s/%s could not be recorded", report.tenant_id,
                                 report.workload)
