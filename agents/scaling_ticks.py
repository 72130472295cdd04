"""scaling-ticks: evaluate a tenant's scheduled policies at the timer's clock; the timer that sends them.

The timer runs on every worker every SCALING_TICK_SECONDS (0: no timer) and sends one tick per tenant with
an enabled scheduled policy among the partitions this worker holds; the tick's agent (the tenant's owner)
decides. The clock is the wall clock plus SCALING_CLOCK_OFFSET_SECONDS.
"""

import logging
from typing import Any

from pydantic import ValidationError

from agents.runtime import dead_letter, topic
from agents.scaling_runtime import ENABLED, ENGINE, SETTINGS, carry_out, clock
from pipeline.app import app
from pipeline.contract.topics import SCALING_TICKS
from pipeline.isolation import guarded
from pipeline.readiness import is_ready
from pipeline.scaling.records import Tick

logger = logging.getLogger(__name__)


@app.agent(topic(SCALING_TICKS), concurrency=1)
async def scaling_ticks(stream: Any) -> None:
    async for message in stream.events():
        try:
            tick = Tick.model_validate_json(message.value)
        except ValidationError as exc:
            await dead_letter(SCALING_TICKS, message.value, message.key, "schema", str(exc))
            continue
        try:
            await carry_out(ENGINE.on_tick(tick))
        except Exception:
            ENGINE.forget()  # a half-made change must not stay cached
            logger.exception("scheduled scaling of %s failed", tick.tenant_id)


async def send_ticks() -> int:
    """One tick per tenant held here with a scheduled policy; returns how many were sent."""
    if not ENABLED or not is_ready(app)[0]:
        return 0
    at = clock()
    sent = 0
    for tenant_id in ENGINE.tick_tenants():
        tick = Tick(tenant_id=tenant_id, at=at)
        fut = await topic(SCALING_TICKS).send(key=tenant_id.encode(), value=tick.model_dump_json().encode())
        await fut
        sent += 1
    return sent


if SETTINGS.scaling_tick_seconds > 0:

    @app.timer(interval=SETTINGS.scaling_tick_seconds)
    @guarded("scaling-ticks")
    async def scaling_timer() -> None:
        await send_ticks()
