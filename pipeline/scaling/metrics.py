"""Prometheus metrics of the scaling engine (served at /metrics with the rest)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SAMPLES = Counter("scaling_samples_total", "resource-metrics samples the scaling agent accumulated.")
LATE_SAMPLES = Counter(
    "scaling_late_samples_total", "Samples of a window already closed for their workload (not counted)."
)
WINDOWS_CLOSED = Counter("scaling_windows_closed_total", "Utilization windows closed (learned and decided on).")
MODEL_SECONDS = Histogram(
    "scaling_model_seconds",
    "Forecaster work per closed window: learn_one + forecast (in the forecaster process).",
    buckets=(10e-6, 20e-6, 30e-6, 50e-6, 75e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05),
)
SNAPSHOT_SECONDS = Histogram(
    "scaling_snapshot_seconds",
    "Time to serialize one forecaster snapshot.",
    buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1),
)
MODEL_RESTORES = Counter(
    "scaling_model_restores_total", "Forecasters loaded into memory, by source.", ["source"]
)
DECISIONS = Counter("scaling_decisions_total", "Scaling decisions stored.", ["trigger", "action"])
APPLIES = Counter("scaling_apply_total", "Reads / patches of Deployments, by outcome.", ["outcome"])
GRANTS = Counter("scaling_grants_total", "Fair-share grants sent to the workloads' owners.")
SNAPSHOTS_REFUSED = Counter(
    "scaling_snapshots_refused_total",
    "Forecaster snapshots refused before unpickling (unsigned, or not signed with this fleet's key for the workload).",
    ["reason"],
)
FORECASTERS_EVICTED = Counter(
    "scaling_forecasters_evicted_total",
    "Forecasters dropped from memory to stay within a cap (tenant_cap, global_cap).", ["reason"],
)
FORECASTERS_LIVE = Gauge("scaling_forecasters_live", "Forecasters the model host holds in memory.")
FORECASTER_ERRORS = Counter(
    "scaling_forecaster_errors_total",
    "Forecaster failures seen by the worker: kind host_lost (the model process died; a new one starts empty).",
    ["kind"],
)
REQUESTS = Counter(
    "scaling_requests_total",
    "scaling-request-events the engine took (taken) or recognised as a redelivery (duplicate).", ["outcome"],
)
