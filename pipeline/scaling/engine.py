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

**Layers.** :class:`ScalingEngine` (this module: samples and windows, the triggers) builds on
:class:`~pipeline.scaling.engine_decisions.Deciding` (a decision from a workload's state: stored, emitted, applied),
:class:`~pipeline.scaling.engine_models.ModelKeeping` (the forecasters in the model host, their snapshots) and
:class:`~pipeline.scaling.engine_state.EngineState` (the memory and the table reads). What it is given and gives
back is in :mod:`~pipeline.scaling.engine_io`, the windows in :mod:`~pipeline.scaling.windows`, the fair-share
pool in :mod:`~pipeline.scaling.pool`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.events.models import ResourceMetrics, ScalingRequest
from pipeline.outputs import Refused
from pipeline.scaling import metrics
from pipeline.scaling.decision_models import ForecastSummary
from pipeline.scaling.engine_decisions import Deciding, forecast_of
from pipeline.scaling.engine_io import Outcome
from pipeline.scaling.forecast import Forecast
from pipeline.scaling.kube import ApplyRequest
from pipeline.scaling.model_host import LearnResult
from pipeline.scaling.policies import ScheduledPolicy
from pipeline.scaling.records import (
    KEEP_REQUEST_IDS,
    MAX_PENDING_REQUESTS,
    ApplyReport,
    Grant,
    GrantInfo,
    PendingRequest,
    PolicyChange,
    PolicySet,
    Tick,
    WorkloadScaling,
    split_key,
)
from pipeline.scaling.windows import Accumulated, ClosedWindow, OpenWindow
from pipeline.usage import workload_key


class ScalingEngine(Deciding):
    """Per-worker engine: open windows and forecasters in memory, everything else in the tables."""

    # -- samples and windows ---------------------------------------------------------------------------

    def on_sample(self, sample: ResourceMetrics) -> Outcome | None:
        """One sample, with the forecasters in this process (tests, backtests); None when nothing happened."""
        accumulated = self.accumulate([sample])
        if not accumulated.closed:
            return accumulated.outcome or None
        return self.finish(accumulated, self.host.learn(self.learn_requests(accumulated.closed)))

    def accumulate(self, samples: Sequence[ResourceMetrics], placed: Sequence[tuple[str, float]] | None = None,
                   placed_window: float = 0.0) -> Accumulated:
        """Add samples to their open windows. A sample of a later window closes the open one: the closed
        windows wait for their forecasts (:meth:`learn_requests`, then :meth:`finish`).

        ``placed``: each sample's workload key and window start (epoch seconds) as the utilization fold
        computed them (``FoldedSamples.placed``) with windows of ``placed_window`` seconds; used when that is
        this engine's window size (it is the same setting), else the samples are placed here."""
        accumulated = Accumulated()
        self.stats.samples += len(samples)
        metrics.SAMPLES.inc(len(samples))
        live: dict[str, bool] = {}  # tenants looked up in this call
        if placed is None or placed_window != self._window or len(placed) != len(samples):
            size = self._window
            placed = [(workload_key(s.tenant_id, s.workload), math.floor(s.occurred_at.timestamp() / size) * size)
                      for s in samples]
        for sample, (key, start) in zip(samples, placed, strict=True):
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
            result = self._decide(st, self.policies_of(tick.tenant_id, workload), tick.at, "schedule", forecast_of(st),
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


def _merge(into: Outcome, other: Outcome) -> None:
    into.emits.extend(other.emits)
    into.applies.extend(other.applies)
    into.demands.extend(other.demands)


