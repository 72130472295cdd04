"""scaling-policy-requests (from the REST API): put or delete one scaling policy of the tenant."""

from typing import Any

from agents.runtime import events_acked_by_process, process, topic
from agents.scaling_runtime import ENGINE
from pipeline.app import app
from pipeline.contract.topics import SCALING_POLICY_REQUESTS
from pipeline.scaling.records import PolicyChange


@app.agent(topic(SCALING_POLICY_REQUESTS), concurrency=1)
async def scaling_policies(stream: Any) -> None:
    async for message in events_acked_by_process(stream):
        await process(
            message, SCALING_POLICY_REQUESTS, PolicyChange, lambda change: ENGINE.on_policy_change(change).emits
        )
