"""provisioning-results: record each command's transition in the status table, announce it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.runtime import now
from pipeline.app import ProvisioningApp
from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_RESULTS
from pipeline.tenants.logic import handle_provisioning_result

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, stores = deps.io, deps.stores

    @app.agent(io.topic(PROVISIONING_RESULTS), concurrency=1)
    async def provisioning_results(stream: Any) -> None:
        async for message in stream.events():
            try:
                result = ProvisioningResult.model_validate_json(message.value)
                emits = handle_provisioning_result(result, stores, now())
            except Exception as exc:  # bad data or a bug in one result: dead-lettered, the next one comes
                await io.handler_failed(PROVISIONING_RESULTS, message, exc)
                continue
            await io.emit_all(emits)
