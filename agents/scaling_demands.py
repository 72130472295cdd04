"""scaling-demands (one partition): weighted DRF over every workload's latest demand; grants to the owners.

All workloads' demands meet on one partition, so exactly one worker computes the pool (and keeps it in the
one-partition ``scaling_demands`` table). Each demand triggers a new allocation; the grants that changed
(and the one of the workload that asked) go to ``scaling-grants``, keyed by tenant, back to the owners.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_DEMANDS, SCALING_GRANTS
from pipeline.outputs import Emit
from pipeline.scaling.pool import pool_grants
from pipeline.scaling.records import Demand

if TYPE_CHECKING:
    from agents.deps import AgentDeps

logger = logging.getLogger(__name__)


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, engine, demands_table = deps.io, deps.scaling.engine, deps.tables.scaling_demands

    @app.agent(deps.scaling.demands_topic, concurrency=1)
    async def scaling_demands(stream: Any) -> None:
        async for message in stream.events():
            try:
                demand = Demand.model_validate_json(message.value)
            except ValidationError as exc:
                await io.dead_letter(SCALING_DEMANDS, message.value, message.key, "schema", str(exc))
                continue
            pool = engine.config.pool
            if pool is None:
                continue
            try:
                grants = pool_grants(pool, demands_table, demand, datetime.now(UTC), engine.config.demand_ttl_seconds)
            except Exception:
                logger.exception("the fair-share allocation failed for %s/%s", demand.tenant_id, demand.workload)
                continue
            await io.emit_all([Emit(SCALING_GRANTS, grant.tenant_id, grant) for grant in grants])
