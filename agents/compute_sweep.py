"""Periodic compute work of this worker: the sweep (reservations, auto-termination, stuck releases,
abandoned requests, unclaimed access details) and the derivatives engine's quote."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.app import ProvisioningApp
from pipeline.isolation import guarded
from pipeline.readiness import is_ready

if TYPE_CHECKING:
    from agents.deps import AgentDeps


def register(app: ProvisioningApp, deps: AgentDeps) -> None:
    compute = deps.compute

    @app.timer(interval=deps.settings.compute_enforce_interval_seconds)
    @guarded("compute-sweep")
    async def compute_sweep() -> None:
        if is_ready(app)[0]:  # tables recovered: the sweep sees every record of this worker's tenants
            await compute.runtime().tick()

    @app.timer(interval=deps.settings.compute_quote_refresh_seconds)
    @guarded("compute-quotes")
    async def compute_quotes() -> None:
        await compute.runtime().refresh_offers()
