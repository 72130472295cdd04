"""provisioning-results: record each command's transition in the status table, announce it."""

from typing import Any

from agents.runtime import emit_all, handler_failed, topic
from agents.stores import STORES, now
from pipeline.app import app
from pipeline.contract.records import ProvisioningResult
from pipeline.contract.topics import PROVISIONING_RESULTS
from pipeline.tenants.logic import handle_provisioning_result


@app.agent(topic(PROVISIONING_RESULTS), concurrency=1)
async def provisioning_results(stream: Any) -> None:
    async for message in stream.events():
        try:
            result = ProvisioningResult.model_validate_json(message.value)
            emits = handle_provisioning_result(result, STORES, now())
        except Exception as exc:  # bad data or a bug in one result: dead-lettered, the next one comes
            await handler_failed(PROVISIONING_RESULTS, message, exc)
            continue
        await emit_all(emits)
