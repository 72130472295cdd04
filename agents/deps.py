"""What the composition root (``pipeline/worker.py``) hands to every agent module's ``register(app, deps)``."""

from __future__ import annotations

from dataclasses import dataclass

from agents.backends import Backends
from agents.compute_service import ComputeService
from agents.executor import Executor
from agents.runtime import AgentRuntime
from agents.scaling_runtime import ScalingRuntime
from pipeline.config import Settings
from pipeline.tenants.logic import TenantStores
from tables import Tables


@dataclass(frozen=True)
class AgentDeps:
    """The worker's tables and the runtime objects built once from its settings."""

    settings: Settings
    tables: Tables
    stores: TenantStores
    io: AgentRuntime
    backends: Backends
    executor: Executor
    compute: ComputeService
    scaling: ScalingRuntime
