"""scaling-ticks: evaluate a tenant's scheduled policies at the timer's clock; the timer that sends them.

The timer runs on every worker every SCALING_TICK_SECONDS (0: no timer) and sends one tick per tenant with
an enabled scheduled policy among the partitions this worker holds; the tick's agent (the tenant's owner)
decides. The clock is the wall clock plus SCALING_CLOCK_OFFSET_SECONDS.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeline.app import ProvisioningApp
from pipeline.contract.topics import SCALING_TICKS
from pipeline.isolation import guarded
from pipeline.readiness import is_ready
from pipeline.scaling.records import Tick

if TYPE_CHECKING:
    from agents.deps import AgentDeps

logger = logging.getLogger(__name__)


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    io, scaling = deps.io, deps.scaling
    engine = scaling.engine

    @app.agent(io.topic(SCALING_TICKS), concurrency=1)
    async def scaling_ticks(stream: Any) -> None:
        async for message in stream.events():
            try:
                tick = Tick.model_validate_json(message.value)
            except ValidationError as exc:
                await io.dead_letter(SCALING_TICKS, message.value, message.key, "schema", str(exc))
                continue
            try:
                await scaling.carry_out(engine.on_tick(tick))
            except Exception:
                engine.forget()  # a half-made change must not stay cached
                logger.exception("scheduled scaling of %s failed", tick.tenant_id)

    async def send_ticks() -> int:
        """One tick per tenant held here with a scheduled policy; returns how many were sent."""
        if not scaling.enabled or not is_ready(app)[0]:
            return 0
        at = scaling.clock()
        sent = 0
        for tenant_id in engine.tick_tenants():
            await io.send(SCALING_TICKS, tenant_id, Tick(tenant_id=tenant_id, at=at))
            sent += 1
        return sent

    if deps.settings.scaling_tick_seconds > 0:

        @app.timer(interval=deps.settings.scaling_tick_seconds)
        @guarded("scaling-ticks")
        async def scaling_timer() -> None:
            await send_ticks()
