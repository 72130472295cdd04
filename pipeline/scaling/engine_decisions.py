"""How the engine makes, stores, emits and applies a decision: the inputs of :func:`~pipeline.scaling.decide.decide`
from a workload's state (current replicas, capacity, forecast, the quota room of a scaling request), the two
passes with the fair-share pool (uncapped: the demand sent to the pool; capped by the latest grant), the stored
decision and its event, and whether it goes to the Kubernetes API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from river.__version__ import __version__ as RIVER_VERSION

from pipeline.contract.topics import SCALING_EVENTS
from pipeline.outputs import Emit, derived_id
from pipeline.scaling import metrics
from pipeline.scaling.decide import decide
from pipeline.scaling.decision_models import DecisionInputs, ScalingDecision, ScalingState
from pipeline.scaling.engine_io import Outcome
from pipeline.scaling.engine_models import ModelKeeping
from pipeline.scaling.fairshare import ResourceVector, TenantAllocation
from pipeline.scaling.forecast import Forecast
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.policies import CostAwarePolicy, Policy, PredictivePolicy
from pipeline.scaling.records import (
    DecisionBasis,
    Demand,
    LastDecision,
    ModelInfo,
    PendingRequest,
    RequestBasis,
    StoredDecision,
    Trigger,
    WorkloadScaling,
    decision_event,
)
from pipeline.scaling.requests import QuotaRoom, RequestInput, quota_room, resolve_target
from pipeline.tenants.logic import refusal_for
from pipeline.tenants.quota_marks import SAMPLED
from pipeline.usage import workload_key


def _acting(policies: Sequence[Policy]) -> bool:
    """True when some enabled policy may change the replica count (not forecast-only, not a budget)."""
    return any(
        p.enabled and not isinstance(p, CostAwarePolicy) and not (isinstance(p, PredictivePolicy) and p.forecast_only)
        for p in policies
    )


def _pending_grant(key: str, requested: int, current: int, weight: float) -> TenantAllocation:
    return TenantAllocation(
        tenant_id=key, requested=requested, granted=max(current, 0), resources=ResourceVector(),
        dominant_resource=None, dominant_share=0.0, weighted_share=0.0, weight=weight, limited_by="pending",
    )


def forecast_of(st: WorkloadScaling) -> Forecast | None:
    if st.forecast is None:
        return None
    return Forecast.from_dict(st.forecast.model_dump())


class Deciding(ModelKeeping):
    """The engine's layer that decides: from a workload's state to a stored, emitted and maybe applied decision."""

    def _decide(
        self, st: WorkloadScaling, policies: list[Policy], now: datetime, trigger: Trigger,
        forecast: Forecast | None, *, only_if_changed: bool = False,
    ) -> Outcome:
        last_at = st.state.last_decision_at if st.state is not None else None
        if last_at is not None and now < last_at:
            now = last_at  # a workload's decisions never go back in time
        basis = DecisionBasis(
            at=now,
            demand_window=[value for _, value in st.recent[-self.config.demand_windows :]],
            with_forecast=forecast is not None,
            replicas_reported=st.replicas_reported,
        )
        return self._run(st, policies, basis, trigger, st.state, send_demand=True, only_if_changed=only_if_changed)

    def _current(self, st: WorkloadScaling, basis: DecisionBasis) -> int:
        observed = st.observed
        if observed is not None and observed.exists and observed.replicas is not None:
            return observed.replicas
        if basis.replicas_reported is not None:
            return basis.replicas_reported
        if st.state is not None and st.state.desired_replicas is not None:
            return st.state.desired_replicas
        return 0

    def _capacity(self, st: WorkloadScaling) -> float:
        observed = st.observed
        if observed is not None and observed.exists and observed.cpu_per_replica:
            return observed.cpu_per_replica
        return self.config.default_capacity_per_replica

    def _run(
        self, st: WorkloadScaling, policies: list[Policy], basis: DecisionBasis, trigger: Trigger,
        prior: ScalingState | None, *, send_demand: bool, only_if_changed: bool = False,
        decision_id: str | None = None, not_applied: str | None = None,
    ) -> Outcome:
        """Decide from ``basis`` and store, emit and apply the decision. ``decision_id``: the id to give it
        (default: derived from its inputs and the previous decision's id); ``not_applied``: why it is not
        applied whatever it says (the Deployment could not be read)."""
        outcome = Outcome()
        key = workload_key(st.tenant_id, st.workload)
        forecast = forecast_of(st) if basis.with_forecast else None
        current = self._current(st, basis)
        cpr = self._capacity(st)
        observed = st.observed if st.observed is not None and st.observed.exists else None
        request = basis.request
        inputs = DecisionInputs(
            tenant_id=st.tenant_id, workload=st.workload, now=basis.at, current_replicas=current,
            ready_replicas=observed.ready_replicas if observed is not None else None,
            demand_window=basis.demand_window, capacity_per_replica=cpr,
            forecast=forecast,
            request=RequestInput(event_id=request.event_id, target=request.target, asked=request.asked,
                                 reason=request.reason) if request is not None else None,
            quota=self._quota_room(st) if request is not None else None,
            over_quota=self._compute_marks(st.tenant_id),
            quarantined=self._quarantined(st),
        )
        granted: int | None = None
        pending = False
        if self.config.pool is not None:
            uncapped_decision, _ = decide(inputs, policies, prior)
            uncapped = uncapped_decision.desired_replicas
            demand = self._demand(st, uncapped, cpr, basis.at)
            if st.grant is not None:
                allocation = st.grant.allocation
            else:
                allocation = _pending_grant(key, uncapped, current, demand.weight)
                pending = True
            decision, new_state = decide(replace(inputs, fair_share=allocation), policies, prior)
            granted = allocation.granted
            if send_demand and (not only_if_changed or st.last is None or st.last.uncapped != uncapped):
                st.demand_seq += 1
                outcome.demands.append(demand.model_copy(update={"seq": st.demand_seq}))
                st.demand_sent_at = demand.sent_at
        else:
            decision, new_state = decide(inputs, policies, prior)
            uncapped = decision.desired_replicas
        if only_if_changed and st.last is not None and st.last.desired == decision.desired_replicas:
            return outcome
        if not_applied is not None:
            applied, reason = False, not_applied
        else:
            applied, reason = self._apply_plan(st, policies, decision, outcome, requested=request is not None)
        if decision_id is None:
            decision_id = derived_id(key, trigger, basis.at.isoformat(), str(decision.desired_replicas),
                                     str(granted), st.last.decision_id if st.last is not None else "")
        stored = StoredDecision(
            decision_id=decision_id, seq=st.decisions, trigger=trigger, issued_at=self.wall(), applied=applied,
            apply_reason=reason, cause_event_id=request.event_id if request is not None else None,
            uncapped_replicas=uncapped if self.config.pool is not None else None,
            model=ModelInfo(observations=st.observations, snapshot_observations=st.snapshot_observations,
                            river_version=RIVER_VERSION) if self.config.forecast_enabled else None,
            decision=decision,
        )
        self.tables.decisions.put(f"{key}/{st.decisions % self.config.recent_decisions}", stored)
        st.decisions += 1
        st.prior_state = prior
        st.state = new_state
        st.basis = basis
        st.last = LastDecision(
            decision_id=decision_id, at=basis.at, trigger=trigger, desired=decision.desired_replicas,
            uncapped=uncapped, granted=granted, grant_pending=pending, applied=applied, apply_reason=reason,
            observed=observed is not None,
        )
        metrics.DECISIONS.labels(trigger, decision.action).inc()
        outcome.emits.append(Emit(SCALING_EVENTS, st.tenant_id, decision_event(stored)))
        return outcome

    def _apply_plan(
        self, st: WorkloadScaling, policies: list[Policy], decision: ScalingDecision, outcome: Outcome,
        *, requested: bool = False,
    ) -> tuple[bool, str]:
        """Whether (and why not) the decision goes to the Kubernetes API; adds the request to ``outcome``.
        ``requested``: a scaling request's decision, which acts whatever the policies are."""
        if not self.config.apply_enabled:
            return False, self.config.apply_off_reason
        if not requested and not _acting(policies):
            return False, "forecast-only: no enabled policy acts on the workload"
        request = ApplyRequest(st.tenant_id, st.workload)
        observed = st.observed
        if observed is None:
            outcome.applies.append(request)
            return False, "waiting for the Deployment to be observed"
        if not observed.exists:
            if self._stale(st):
                outcome.applies.append(request)
            return False, "the Deployment does not exist"
        if observed.replicas == decision.desired_replicas:
            if self._stale(st):
                outcome.applies.append(request)
            return False, "unchanged"
        outcome.applies.append(replace(request, replicas=decision.desired_replicas))
        # What spec.replicas is about to be: later decisions compare with it, not with the count before this patch
        # (its report updates it again; a failed patch forgets the observation, so it is read again).
        st.observed = observed.model_copy(update={"replicas": decision.desired_replicas})
        return True, f"scale {observed.replicas} -> {decision.desired_replicas}"

    def _demand(self, st: WorkloadScaling, replicas: int, cpr: float, at: datetime) -> Demand:
        tenant = self.tables.tenants.get(st.tenant_id)
        tier = tenant.tier.value if tenant is not None else ""
        quota_record = self.tables.quotas.get(st.tenant_id)
        quota = None
        if quota_record is not None:
            limits = quota_record.limits
            quota = ResourceVector(cpu=limits.cpu_cores, memory=limits.memory_gib, gpu=limits.gpus)
        observed = st.observed if st.observed is not None and st.observed.exists else None
        per_replica = ResourceVector(
            cpu=observed.cpu_per_replica if observed is not None and observed.cpu_per_replica else cpr,
            memory=(observed.memory_gib_per_replica or 0.0) if observed is not None else 0.0,
            gpu=(observed.gpus_per_replica or 0.0) if observed is not None else 0.0,
        )
        return Demand(
            tenant_id=st.tenant_id, workload=st.workload, replicas=replicas, per_replica=per_replica, tier=tier,
            weight=self.config.tier_weights.get(tier, 1.0), quota=quota, decided_at=at, sent_at=self.wall(),
        )

    def _decide_request(self, st: WorkloadScaling, pending: PendingRequest, unreadable: str | None) -> Outcome:
        """Decide a request now (the caller saves ``st``): its id is derived from the request's event id."""
        key = workload_key(st.tenant_id, st.workload)
        last_at = st.state.last_decision_at if st.state is not None else None
        at = pending.occurred_at if last_at is None or pending.occurred_at >= last_at else last_at
        basis = DecisionBasis(
            at=at,
            demand_window=[value for _, value in st.recent[-self.config.demand_windows :]],
            with_forecast=st.forecast is not None,
            replicas_reported=st.replicas_reported,
        )
        target, asked = resolve_target(pending.desired_replicas, pending.delta, self._current(st, basis))
        basis.request = RequestBasis(event_id=pending.event_id, target=target, asked=asked, reason=pending.reason)
        # A Deployment known to be missing (or unreadable) asks the pool for nothing: it would hold a share of
        # the pool for a workload that cannot use it until the demand expires.
        missing = unreadable is not None or (st.observed is not None and not st.observed.exists)
        return self._run(st, self.policies_of(st.tenant_id, st.workload), basis, "request", st.state,
                         send_demand=not missing, decision_id=derived_id(key, "request", pending.event_id),
                         not_applied=unreadable)

    def _quarantined(self, st: WorkloadScaling) -> bool:
        """Whether a critical anomaly quarantined the workload (held at its floor until an admin releases it)."""
        log = self.tables.anomalies.get(st.tenant_id) if self.tables.anomalies is not None else None
        return log is not None and st.workload in log.quarantined

    def _compute_marks(self, tenant_id: str) -> list[str]:
        """The compute resources the tenant is marked over quota for: they hold every scale-up (a policy's as
        well as a request's) until the mark is lifted. The storage mark does not: replicas use no storage."""
        record = self.tables.quotas.get(tenant_id)
        if record is None:
            return []
        return sorted(resource.value for resource in record.over_quota if resource in SAMPLED)

    def _quota_room(self, st: WorkloadScaling) -> QuotaRoom | None:
        """Room the tenant's quota leaves for the workload's replicas: its limits minus what the tenant's other
        observed Deployments request (none while the tenant is marked over its quota)."""
        record = self.tables.quotas.get(st.tenant_id)
        if record is None:
            return None
        refusal = refusal_for(record, "kubernetes")
        if refusal is not None:
            return QuotaRoom(replicas=0, detail=refusal)
        observed = st.observed
        if observed is None or not observed.exists:
            return None
        others = [0.0, 0.0, 0.0]
        index = self.tables.index.get(st.tenant_id)
        for name in index.workloads if index is not None else []:
            other = self.load(workload_key(st.tenant_id, name)) if name != st.workload else None
            seen = other.observed if other is not None else None
            if seen is None or not seen.exists or not seen.replicas:
                continue
            for i, each in enumerate((seen.cpu_per_replica, seen.memory_gib_per_replica, seen.gpus_per_replica)):
                others[i] += seen.replicas * (each or 0.0)
        limits = record.limits
        return quota_room(
            ResourceVector(cpu=observed.cpu_per_replica or 0.0, memory=observed.memory_gib_per_replica or 0.0,
                           gpu=observed.gpus_per_replica or 0.0),
            ResourceVector(cpu=limits.cpu_cores, memory=limits.memory_gib, gpu=limits.gpus),
            ResourceVector.from_tuple(others),
        )
