"""Periodic compute work of this worker: the sweep (reservations, auto-termination, stuck releases,
abandoned requests, unclaimed access details) and the derivatives engine's quote."""

from agents.compute_service import runtime
from pipeline.app import app
from pipeline.isolation import guarded
from pipeline.readiness import is_ready


@app.timer(interval=app.settings.compute_enforce_interval_seconds)
@guarded("compute-sweep")
async def compute_sweep() -> None:
    if is_ready(app)[0]:  # tables recovered: the sweep sees every record of this worker's tenants
        await runtime().tick()


@app.timer(interval=app.settings.compute_quote_refresh_seconds)
@guarded("compute-quotes")
async def compute_quotes() -> None:
    await runtime().refresh_offers()
