"""The scaling engine as the agents run it: windows -> forecasts -> decisions -> grants -> Deployments.

Everything here is plain Python over :class:`~pipeline.typed_table.TypedTable` s (Faust tables in the
worker, dicts in the tests); the agents (``agents/scaling_*.py``) are thin loops that call one method per
record and emit / submit what it returns (:class:`Outcome`).

**Windows.** :meth:`ScalingEngine.on_sample` accumulates each workload's samples per tumbling window of
``window_seconds`` of *event time* (``occurred_at``, which the bridge also makes the Kafka timestamp, like
the ``utilization`` table). The first sample of a later window closes the open one; a sample of an older
window is late and skipped. The open window lives in memory only: after a restart (or a rebalance) the
window in progress is computed from the samples that arrive afterwards, which is still a sample mean.

**Forecasts.** At each close, the workload's :class:`~pipeline.scaling.forecast.OnlineForecaster` learns the
window's demand (mean CPU cores) and forecasts ``horizon`` windows with the band the policies need. The
models live in a :class:`~pipeline.scaling.model_host.ModelHost`: in the worker a child process, so the
agent closes a batch's windows (:meth:`ScalingEngine.accumulate`), has them learned off the event loop
(:meth:`ScalingEngine.learn_requests`) and then decides (:meth:`ScalingEngine.finish`); :meth:`ScalingEngine.on_sample`
does all three in this process. Every ``snapshot_every`` learned windows a model is snapshotted into
``model-snapshots``. A model the host may not hold as the state table has it (restart, rebalance, a lost
child) is restored from its snapshot and the windows closed since (kept in the state), so it continues
exactly where it was.

**Decisions.** :func:`~pipeline.scaling.decide.decide` runs at each window close (``now`` = the window's
end, event time: a replayed trace decides as it would have live) and on the timer for workloads with
scheduled policies (``now`` = the timer's clock). A decision's time never goes back for a workload.

**Fair share.** With a pool configured, each decision is made twice: without a grant (the workload's
demand, sent to the one-partition ``scaling-demands`` topic where :func:`allocate_pool` runs weighted DRF
over the latest demand of every workload) and capped by the workload's latest grant (a workload without
a grant yet does not scale up until it gets one). A new grant that changes the outcome re-makes the last
decision from the same inputs.

**Applying.** A decision is applied (``ApplyRequest``) when the workload has an acting policy (or the decision
is a scaling request's), applying is on, its Deployment has been observed and the count differs from
``spec.replicas``.

**Scaling requests** (:meth:`ScalingEngine.on_request`) are one more trigger (``request``): the engine reads the
Deployment first (a delta is resolved against its ``spec.replicas``, the quota against its pods' requests), then
decides with the request's count in place of the policies' (:mod:`pipeline.scaling.requests`). The decision's
id is derived from the request's event id, and the workload's state keeps the ids of the requests it took, so a
redelivered request is not decided (nor applied) twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from river.__version__ import __version__ as RIVER_VERSION

from pipeline.contract.topics import SCALING_EVENTS
from pipeline.events.models import ResourceMetrics, ScalingRequest
from pipeline.outputs import Emit, Refused, derived_id
from pipeline.scaling import metrics
from pipeline.scaling.decide import decide
from pipeline.scaling.decision_models import DecisionInputs, ForecastSummary, ScalingDecision, ScalingState
from pipeline.scaling.engine_io import Outcome
from pipeline.scaling.engine_models import ModelKeeping
from pipeline.scaling.fairshare import (
    ResourceVector,
    TenantAllocation,
)
from pipeline.scaling.forecast import Forecast
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.model_host import LearnResult
from pipeline.scaling.policies import CostAwarePolicy, Policy, PredictivePolicy, ScheduledPolicy
from pipeline.scaling.records import (
    KEEP_REQUEST_IDS,
    MAX_PENDING_REQUESTS,
    ApplyReport,
    DecisionBasis,
    Demand,
    Grant,
    GrantInfo,
    LastDecision,
    ModelInfo,
    PendingRequest,
    PolicyChange,
    PolicySet,
    RequestBasis,
    StoredDecision,
    Tick,
    Trigger,
    WorkloadScaling,
    decision_event,
    split_key,
)
from pipeline.scaling.requests import QuotaRoom, RequestInput, quota_room, resolve_target
from pipeline.scaling.windows import Accumulated, ClosedWindow, OpenWindow
from pipeline.tenants.logic import refusal_for
from pipeline.usage import workload_key

logger = logging.getLogger(__name__)


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


class ScalingEngine(ModelKeeping):
    """Per-worker engine: open windows and forecasters in memory, everything else in the tables."""

    # -- samples and windows ---------------------------------------------------------------------------

    def on_sample(self, sample: ResourceMetrics) -> Outcome | None:
        """One sample, with the forecasters in this process (tests, backtests); None when nothing happened."""
        accumulated = self.accumulate([sample])
        if not accumulated.closed:
            return accumulated.outcome or None
        return self.finish(accumulated, self.host.learn(self.learn_requests(accumulated.closed)))

    def accumulate(self, samples: Sequence[ResourceMetrics]) -> Accumulated:
        """Add samples to their open windows. A sample of a later window closes the open one: the closed
        windows wait for their forecasts (:meth:`learn_requests`, then :meth:`finish`)."""
        accumulated = Accumulated()
        self.stats.samples += len(samples)
        metrics.SAMPLES.inc(len(samples))
        live: dict[str, bool] = {}  # tenants looked up in this call
        for sample in samples:
            key = workload_key(sample.tenant_id, sample.workload)
            start = math.floor(sample.occurred_at.timestamp() / self._window) * self._window
            window = self.open.get(key)
            if window is None:
                if (observe := self._first_sample(key, sample, start)) is not None:
                    accumulated.outcome.extend(observe)
                continue
            if start > window.start:
                fresh = OpenWindow(start)
                fresh.add(sample)
                self.open[key] = fresh
                if (closed := self._closed(sample.tenant_id, sample.workload, window, live)) is not None:
                    accumulated.closed.append(closed)
            elif start < window.start:
                self._late()
            else:
                window.add(sample)
        return accumulated

    def _late(self) -> None:
        self.stats.late += 1
        metrics.LATE_SAMPLES.inc()

    def _first_sample(self, key: str, sample: ResourceMetrics, start: float) -> Outcome | None:
        """First sample of a workload in this process: check against the state, maybe observe the Deployment."""
        st = self.load(key)
        if st is not None and st.last_window_end is not None and start < st.last_window_end.timestamp():
            self._late()
            return None
        window = OpenWindow(start)
        stored = self.tables.windows(key, datetime.fromtimestamp(start, UTC)) if self.tables.windows else None
        if stored is not None:
            window.count, window.cpu_sum, window.replicas = stored.count, stored.cpu_sum, stored.replicas_last
        window.add(sample)
        self.open[key] = window
        if self.config.apply_enabled and self._stale(st) and self.policies_of(sample.tenant_id, sample.workload):
            return Outcome(applies=[ApplyRequest(sample.tenant_id, sample.workload)])
        return None

    def _closed(self, tenant_id: str, workload: str, window: OpenWindow, live: dict[str, bool]) -> ClosedWindow | None:
        """The closed window to learn and decide on; None for an unknown tenant, an empty or a late window."""
        if tenant_id not in live:
            live[tenant_id] = self._live_tenant(tenant_id) is not None
        if not live[tenant_id] or window.count == 0:
            return None
        st = self.load(workload_key(tenant_id, workload))
        end = datetime.fromtimestamp(window.start + self._window, UTC)
        if st is not None and st.last_window_end is not None and end <= st.last_window_end:
            self._late()
            return None
        return ClosedWindow(tenant_id=tenant_id, workload=workload, end=end, demand=window.cpu_sum / window.count,
                            replicas=window.replicas, policies=self.policies_of(tenant_id, workload),
                            generation=self.generation)

    # -- closed windows: recorded with their forecasts, then decided ---------------------------------------

    def finish(self, accumulated: Accumulated, results: Sequence[LearnResult]) -> Outcome:
        """Record the closed windows with their forecasts (``results`` as :meth:`learn_requests` ordered them;
        empty: without forecasts) and decide; the outcome's effects come after the accumulation's."""
        outcome = Outcome()
        outcome.extend(accumulated.outcome)
        closed: dict[str, WorkloadScaling] = {}
        for index, window in enumerate(accumulated.closed):
            result = results[index] if index < len(results) else None
            if result is not None:
                self._learned(result)
            if window.generation == self.generation:  # else a rebalance came in between: the tables may have moved
                st = closed.get(window.key)
                if st is None:
                    st = self._state(window.tenant_id, window.workload)
                outcome.extend(self._close(window, st, result))
                closed[window.key] = st
        for key, st in closed.items():  # one write per workload, however many of its windows closed
            self.save(key, st)
        return outcome

    def _close(self, window: ClosedWindow, st: WorkloadScaling, result: LearnResult | None) -> Outcome:
        """Record a closed window in the workload's state (the caller saves it) and decide on it."""
        key = window.key
        self.stats.windows += 1
        metrics.WINDOWS_CLOSED.inc()
        forecast: Forecast | None = None
        if result is not None:
            forecast = result.forecast
            st.observations = result.observations
            st.forecast = ForecastSummary.from_forecast(forecast)
            if result.snapshot is not None and self.config.signer is not None:
                metrics.SNAPSHOT_SECONDS.observe(result.snapshot_seconds)
                self._store_snapshot(key, st, result.snapshot, window.end)
        st.recent = [*st.recent, (window.end, window.demand)][-self.config.keep_windows :]
        st.last_window_end = window.end
        if window.replicas is not None:
            st.replicas_reported = window.replicas
        outcome = Outcome()
        if window.policies:
            outcome = self._decide(st, window.policies, window.end, "window", forecast)
        return outcome

    # -- decisions --------------------------------------------------------------------------------------

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
        forecast = _forecast_of(st) if basis.with_forecast else None
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
            return False, "applying is off (SCALING_APPLY_ENABLED=false)"
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

    # -- the other triggers ------------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> Outcome:
        """Evaluate the scheduled policies of a tenant at the timer's clock; decide when something changes."""
        outcome = Outcome()
        policy_set = self.policy_set(tick.tenant_id)
        if policy_set is None or self._live_tenant(tick.tenant_id) is None:
            return outcome
        workloads = sorted({p.workload for p in policy_set.policies.values()
                            if isinstance(p, ScheduledPolicy) and p.enabled})
        for workload in workloads:
            key = workload_key(tick.tenant_id, workload)
            st = self._state(tick.tenant_id, workload)
            if self.config.apply_enabled and st.observed is None:
                outcome.applies.append(ApplyRequest(tick.tenant_id, workload))
                self.save(key, st)
                continue
            result = self._decide(st, self.policies_of(tick.tenant_id, workload), tick.at, "schedule", _forecast_of(st),
                                  only_if_changed=st.last is not None)
            self.save(key, st)
            _merge(outcome, result)
        return outcome

    def on_policy_change(self, change: PolicyChange) -> Outcome:
        """Put or delete one policy of the tenant (validated again here: the topic is a trust boundary)."""
        if self._live_tenant(change.tenant_id) is None:
            raise Refused("unknown-tenant", f"tenant {change.tenant_id!r} does not exist")
        policy_set = self.policy_set(change.tenant_id)
        policy_set = policy_set.model_copy(deep=True) if policy_set is not None else PolicySet(
            tenant_id=change.tenant_id, updated_at=change.occurred_at
        )
        if change.op == "put":
            policy = change.policy
            if policy is None or policy.tenant_id != change.tenant_id or policy.policy_id != change.policy_id:
                raise Refused("bad-policy", "the policy's tenant_id / policy_id do not match the request")
            policy_set.policies = {**policy_set.policies, change.policy_id: policy}
        else:
            policy_set.policies = {k: v for k, v in policy_set.policies.items() if k != change.policy_id}
        policy_set.updated_at = change.occurred_at
        policy_set.updated_by = change.actor
        policy_set.version += 1
        self.tables.policies.put(change.tenant_id, policy_set)
        self._policy_sets[change.tenant_id] = policy_set
        return Outcome()

    def on_applied(self, report: ApplyReport) -> Outcome:
        """Record what the Kubernetes API said; re-make a decision that was waiting for it."""
        metrics.APPLIES.labels("error" if report.error else "scaled" if report.scaled else "observed").inc()
        if self._live_tenant(report.tenant_id) is None:
            return Outcome()
        key = workload_key(report.tenant_id, report.workload)
        st = self._state(report.tenant_id, report.workload)
        outcome = Outcome()
        if report.observation is not None:
            st.observed = report.observation
        elif report.requested_replicas is not None:
            st.observed = None  # the patch failed: what the Deployment says is unknown until it is read again
        last = st.last
        if st.pending_requests:
            if report.observation is None and report.requested_replicas is not None:
                # A failed patch: read the Deployment again before deciding the requests on it.
                outcome.applies.append(ApplyRequest(report.tenant_id, report.workload))
                self.waiting[key] = self.wall().timestamp()
            else:
                self.waiting.pop(key, None)
                unreadable = None if report.observation is not None else (
                    f"the Deployment could not be read: {report.error or 'no answer'}")
                for pending in st.pending_requests:  # in arrival order: each starts from the count the last set
                    outcome.extend(self._decide_request(st, pending, unreadable))
                st.pending_requests = []
        elif (report.observation is not None and report.observation.exists and last is not None
                and not last.observed and st.basis is not None and st.basis.request is None):
            # (A request is decided on a read it waited for: one recorded as not applied because its Deployment
            # was missing or unreadable stays so, rather than act whenever the Deployment shows up.)
            policies = self.policies_of(report.tenant_id, report.workload)
            if policies:
                outcome = self._run(st, policies, st.basis, "observed", st.prior_state, send_demand=True)
        self.save(key, st)
        return outcome

    def on_grant(self, grant: Grant) -> Outcome:
        """Keep the workload's grant; re-make its last decision when the grant changes what it allows.

        A grant computed for an older demand than the workload's latest is ignored: the pool has not seen the
        latest one yet, and its answer follows."""
        key = workload_key(grant.tenant_id, grant.workload)
        st = self.load(key)
        if st is None or grant.demand_seq < st.demand_seq:
            return Outcome()  # unknown, or the answer to a demand this workload has since replaced
        st.grant = GrantInfo(allocation=grant.allocation, contended=grant.contended, computed_at=grant.computed_at)
        outcome = Outcome()
        last = st.last
        if last is not None and st.basis is not None:
            granted = grant.allocation.granted
            changes = last.granted != granted and (min(last.uncapped, granted) != last.desired or last.granted is None)
            if changes or last.grant_pending:  # a decision made while waiting for the pool is re-made with its answer
                policies = self.policies_of(grant.tenant_id, grant.workload)
                if policies or st.basis.request is not None:
                    outcome = self._run(st, policies, st.basis, "fair_share", st.prior_state, send_demand=False)
        self.save(key, st)
        return outcome

    def on_request(self, request: ScalingRequest) -> Outcome:
        """Take a scaling request: read the Deployment, then decide (trigger ``request``) when the answer comes
        (:meth:`on_applied`); with applying off, decide at once. A redelivered request changes nothing.

        Raises :class:`Refused` (a dead letter) for an unknown tenant or too many requests waiting."""
        if self._live_tenant(request.tenant_id) is None:
            raise Refused("unknown-tenant", f"tenant {request.tenant_id!r} does not exist")
        key = workload_key(request.tenant_id, request.workload)
        known = self.load(key)
        if known is not None and request.event_id in known.request_ids:
            metrics.REQUESTS.labels("duplicate").inc()
            return Outcome()
        if known is not None and len(known.pending_requests) >= MAX_PENDING_REQUESTS:
            raise Refused("too-many-requests", f"{len(known.pending_requests)} scaling requests of "
                          f"{request.workload!r} are already waiting for its Deployment to be read")
        st = self._state(request.tenant_id, request.workload)
        st.request_ids = [*st.request_ids, request.event_id][-KEEP_REQUEST_IDS:]
        pending = PendingRequest(event_id=request.event_id, desired_replicas=request.desired_replicas,
                                 delta=request.delta, reason=request.reason, occurred_at=request.occurred_at)
        metrics.REQUESTS.labels("taken").inc()
        if not self.config.apply_enabled:
            outcome = self._decide_request(st, pending, None)
        else:
            # Decide on a fresh read: a delta counts from spec.replicas as it is now (someone may have scaled
            # it by hand), and the quota from what the pods request now.
            st.pending_requests = [*st.pending_requests, pending]
            outcome = Outcome(applies=[ApplyRequest(request.tenant_id, request.workload)])
            self.waiting[key] = self.wall().timestamp()
        self.save(key, st)
        return outcome

    def reads_due(self, after_seconds: float) -> list[ApplyRequest]:
        """The Deployment reads to ask for again: those of scaling requests that have waited ``after_seconds``
        (the report was lost) and, first thing after a restart or a rebalance, those of every request waiting in
        the state table (the reads asked for before went with the old process's queue). Call it once the tables
        are recovered; the report of a read goes to the tenant's owner, whichever worker made it."""
        if not self.config.apply_enabled:
            return []
        if self._waiting_scanned != self.generation:
            self._waiting_scanned = self.generation
            for key, st in self.tables.state.items():
                if st.pending_requests and key not in self.waiting:
                    self.waiting[key] = -math.inf
        now = self.wall().timestamp()
        due = sorted(key for key, asked in self.waiting.items() if now - asked >= after_seconds)
        for key in due:
            self.waiting[key] = now
        return [ApplyRequest(*split_key(key)) for key in due]

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


def _forecast_of(st: WorkloadScaling) -> Forecast | None:
    if st.forecast is None:
        return None
    return Forecast.from_dict(st.forecast.model_dump())


def _merge(into: Outcome, other: Outcome) -> None:
    into.emits.extend(other.emits)
    into.applies.extend(other.applies)
    into.demands.extend(other.demands)


