"""The forecasters of the engine's workloads: what the model host learns for the closed windows, which models
it keeps (least recently used evicted), the material it restores a model from (a signed snapshot and the recent
windows) and the snapshots stored in ``model-snapshots``.

The models live in a :class:`~pipeline.scaling.model_host.ModelHost` (in the worker a child process); the
engine keeps what it needs to know whether the host still holds a workload's model as the state table has it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from river.__version__ import __version__ as RIVER_VERSION

from pipeline.scaling import metrics
from pipeline.scaling.engine_io import EngineConfig, Tables
from pipeline.scaling.engine_state import EngineState
from pipeline.scaling.forecast import ForecasterConfig
from pipeline.scaling.model_host import LearnRequest, LearnResult, ModelHost, Restore
from pipeline.scaling.predictive import required_quantiles
from pipeline.scaling.records import ModelSnapshot, WorkloadScaling
from pipeline.scaling.residency import ModelResidency
from pipeline.scaling.windows import ClosedWindow

logger = logging.getLogger(__name__)

BAND = (0.1, 0.9)


class ModelKeeping(EngineState):
    """The engine's layer over the model host (learn requests, residency, restores, snapshots)."""

    def __init__(self, config: EngineConfig, tables: Tables, wall: Callable[[], datetime] | None = None) -> None:
        super().__init__(config, tables, wall)
        self.forecaster_config = ForecasterConfig(interval_minutes=config.window_seconds / 60.0,
                                                  horizon=config.horizon)
        self.host = ModelHost(self.forecaster_config, config.snapshot_every)
        """The models of :meth:`on_sample` (the worker's agent sends :meth:`learn_requests` to its own host)."""
        self.hosted: dict[str, int] = {}
        """Observations of each workload's model in the host, as its last result said."""
        self.residency = ModelResidency(config.max_models_per_tenant, config.max_models)
        """The workloads whose models the host keeps, as the requests sent so far left it."""

    def learn_requests(self, closed: Sequence[ClosedWindow]) -> list[LearnRequest]:
        """What the model host learns for the closed windows, in order (none with forecasting off). A request
        carries the restore material when the host may not hold the workload's model as the state has it."""
        if not self.config.forecast_enabled:
            return []
        requests: list[LearnRequest] = []
        checked: set[str] = set()
        for window in closed:
            key = window.key
            restore = None
            evict: tuple[str, ...] = ()
            if key not in checked:
                checked.add(key)
                resident = key in self.residency
                evict = self._make_room(key, window.tenant_id, checked)
                st = self.load(key)
                if not resident or self.hosted.get(key) != (st.observations if st is not None else 0):
                    restore = self.restore_material(key, st)
            requests.append(LearnRequest(key=key, value=window.demand, end=window.end,
                                         quantiles=required_quantiles(window.policies, BAND), restore=restore,
                                         evict=evict))
        metrics.FORECASTERS_LIVE.set(len(self.residency))
        return requests

    def _make_room(self, key: str, tenant_id: str, keep: set[str]) -> tuple[str, ...]:
        """Make ``key`` resident; the models to evict for it (never one this batch learns)."""
        evicted = self.residency.touch(key, tenant_id, keep)
        for victim, reason in evicted:
            self.hosted.pop(victim, None)
            self.stats.evictions += 1
            metrics.FORECASTERS_EVICTED.labels(reason).inc()
        if evicted:
            logger.debug("evicting the forecasters of %s for %s", [v for v, _ in evicted], key)
        return tuple(victim for victim, _ in evicted)

    def restore_material(self, key: str, st: WorkloadScaling | None) -> Restore:
        """The workload's snapshot and the windows its state keeps: what a host rebuilds the model from."""
        snapshot = self.tables.snapshots.get(key)
        blob = self._verified(key, snapshot) if snapshot is not None else None
        return Restore(
            snapshot=blob,
            snapshot_window_end=snapshot.window_end if snapshot is not None and blob is not None else None,
            recent=tuple(st.recent) if st is not None else (),
            observations=st.observations if st is not None else 0,
        )

    def _verified(self, key: str, snapshot: ModelSnapshot) -> bytes | None:
        """The snapshot's bytes when this fleet's key signed them for this workload, else None (refused: the
        model starts anew from the windows in its state). Nothing unverified reaches the unpickler."""
        signer = self.config.signer
        if signer is None:
            return None
        try:
            blob = base64.b64decode(snapshot.data_b64, validate=True)
        except ValueError:
            blob = None
        if blob is not None and signer.verify(key, blob, snapshot.signature):
            return blob
        reason = "unsigned" if not snapshot.signature else "bad_signature"
        self.stats.snapshots_refused += 1
        metrics.SNAPSHOTS_REFUSED.labels(reason).inc()
        logger.warning("refusing the forecaster snapshot of %s (%s): it is not signed with SNAPSHOT_SIGNING_KEY "
                       "for this workload; the model starts anew from its recent windows", key, reason)
        return None

    def models_lost(self) -> None:
        """The model host lost its models (its process died): every next request restores."""
        self.hosted.clear()
        self.residency.clear()
        metrics.FORECASTERS_LIVE.set(0)

    def _learned(self, result: LearnResult) -> None:
        if result.key in self.residency:  # else evicted by a later request: the host no longer has it
            self.hosted[result.key] = result.observations
        self.stats.model_seconds += result.seconds
        self.stats.model_calls += 1
        metrics.MODEL_SECONDS.observe(result.seconds)
        if result.restored_from is not None:
            self.stats.restores[result.restored_from] = self.stats.restores.get(result.restored_from, 0) + 1
            metrics.MODEL_RESTORES.labels(result.restored_from).inc()
            if result.restored_from != "new":
                logger.info("forecaster of %s loaded (%s, %d windows replayed): %d observations",
                            result.key, result.restored_from, result.replayed, result.observations)

    def _store_snapshot(self, key: str, st: WorkloadScaling, blob: bytes, end: datetime) -> None:
        assert self.config.signer is not None
        self.tables.snapshots.put(key, ModelSnapshot(
            tenant_id=st.tenant_id, workload=st.workload, river_version=RIVER_VERSION,
            observations=st.observations, window_end=end, taken_at=self.wall(), size_bytes=len(blob),
            data_b64=base64.b64encode(blob).decode(), signature=self.config.signer.sign(key, blob),
        ))
        st.snapshot_observations = st.observations
        st.snapshot_window_end = end
        self.stats.snapshots += 1
