"""The scaling engine's memory and its reads of the tables: the base every layer of
:class:`~pipeline.scaling.engine.ScalingEngine` builds on.

In memory: the open windows, read-through caches of the states and policy sets this engine writes itself (it is
their only writer while it owns the tenant; a rebalance drops them, :meth:`EngineState.forget`), the scaling
requests waiting for a Deployment read, counters. Everything else is in the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.scaling.engine_io import EngineConfig, Tables
from pipeline.scaling.policies import Policy, ScheduledPolicy
from pipeline.scaling.records import PolicySet, StoredDecision, WorkloadIndex, WorkloadScaling
from pipeline.scaling.windows import OpenWindow
from pipeline.tenants.models import TenantRecord, TenantState
from pipeline.usage import workload_key


@dataclass
class EngineStats:
    samples: int = 0
    late: int = 0
    windows: int = 0
    model_seconds: float = 0.0
    model_calls: int = 0
    snapshots: int = 0
    snapshots_refused: int = 0
    evictions: int = 0
    restores: dict[str, int] = field(default_factory=dict)


class EngineState:
    """The engine's memory (open windows, caches, waiting requests, counters) and its reads of the tables."""

    def __init__(self, config: EngineConfig, tables: Tables, wall: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.tables = tables
        self.wall = wall or (lambda: datetime.now(UTC))
        self.open: dict[str, OpenWindow] = {}
        # Read-through caches of what this engine writes itself (cleared at every rebalance: ``forget``).
        self._states: dict[str, WorkloadScaling] = {}
        self._policy_sets: dict[str, PolicySet | None] = {}
        self.stats = EngineStats()
        self._window = config.window_seconds
        self.generation = 0
        """Bumped by :meth:`forget`: windows closed before it are not recorded after it."""
        self.waiting: dict[str, float] = {}
        """Workloads whose scaling requests wait for a read of their Deployment -> when the read was last asked
        for (wall clock, epoch seconds): :meth:`reads_due` asks again for those that waited too long."""
        self._waiting_scanned = -1
        """The generation whose state table :meth:`reads_due` has scanned for waiting requests."""

    def _stale(self, st: WorkloadScaling | None) -> bool:
        if st is None or st.observed is None:
            return True
        age = (self.wall() - st.observed.observed_at).total_seconds()
        return age > self.config.observe_interval_seconds

    def _live_tenant(self, tenant_id: str) -> TenantRecord | None:
        tenant = self.tables.tenants.get(tenant_id)
        if tenant is None or tenant.state is not TenantState.ACTIVE:
            return None
        return tenant

    def _state(self, tenant_id: str, workload: str) -> WorkloadScaling:
        key = workload_key(tenant_id, workload)
        st = self.load(key)
        if st is None:
            st = WorkloadScaling(tenant_id=tenant_id, workload=workload)
            index = self.tables.index.get(tenant_id) or WorkloadIndex(tenant_id=tenant_id)
            if workload not in index.workloads:
                index.workloads = sorted([*index.workloads, workload])
                self.tables.index.put(tenant_id, index)
        return st

    def policy_set(self, tenant_id: str) -> PolicySet | None:
        """The tenant's policies (cached: this engine is their only writer while it owns the tenant)."""
        if tenant_id not in self._policy_sets:
            self._policy_sets[tenant_id] = self.tables.policies.get(tenant_id)
        return self._policy_sets[tenant_id]

    def load(self, key: str) -> WorkloadScaling | None:
        """A workload's state (cached, like the policies)."""
        st = self._states.get(key)
        if st is None:
            st = self.tables.state.get(key)
            if st is not None:
                self._states[key] = st
        return st

    def save(self, key: str, st: WorkloadScaling) -> None:
        self.tables.state.put(key, st)
        self._states[key] = st

    def forget(self) -> None:
        """Drop the caches and the open windows (a rebalance: other workers may have written the tables)."""
        self._states.clear()
        self._policy_sets.clear()
        self.open.clear()
        self.waiting.clear()  # the next reads_due scans the state table again
        self.generation += 1

    def policies_of(self, tenant_id: str, workload: str) -> list[Policy]:
        policy_set = self.policy_set(tenant_id)
        if policy_set is None:
            return []
        return [p for p in policy_set.for_workload(workload) if p.enabled]

    def recent_decisions(self, tenant_id: str, workload: str | None = None) -> list[StoredDecision]:
        """The stored decisions of the tenant's workloads (or of one), newest first."""
        index = self.tables.index.get(tenant_id)
        workloads = [w for w in (index.workloads if index is not None else []) if workload in (None, w)]
        found: list[StoredDecision] = []
        for name in workloads:
            key = workload_key(tenant_id, name)
            st = self.load(key)
            for slot in range(min(st.decisions if st is not None else 0, self.config.recent_decisions)):
                stored = self.tables.decisions.get(f"{key}/{slot}")
                if stored is not None:
                    found.append(stored)
        found.sort(key=lambda d: (d.decision.at, d.issued_at, d.seq), reverse=True)
        return found

    def tick_tenants(self) -> list[str]:
        """Tenants (held here) with an enabled scheduled policy: the timer sends each a tick."""
        return sorted(
            tenant_id for tenant_id, policy_set in self.tables.policies.items()
            if any(isinstance(p, ScheduledPolicy) and p.enabled for p in policy_set.policies.values())
        )
