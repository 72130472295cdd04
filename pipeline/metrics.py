"""Prometheus metrics of the service (served at /metrics)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, Info

EVENTS_PROCESSED = Counter(
    "provisioning_events_processed_total", "Input events processed successfully.", ["topic"]
)
EVENTS_FAILED = Counter(
    "provisioning_events_failed_total", "Input events that could not be processed.", ["topic"]
)
EVENTS_DUPLICATE = Counter(
    "provisioning_events_duplicate_total", "Redelivered events skipped by the dedupe table.", ["topic"]
)
DEAD_LETTERS = Counter(
    "provisioning_dead_letters_total", "Events sent to the dead-letter topic.", ["topic", "reason"]
)
DEAD_LETTERS_LOST = Counter(
    "provisioning_dead_letters_lost_total", "Dead letters Kafka refused (logged, then dropped).", ["topic"]
)
TABLE_RECORDS_INVALID = Counter(
    "provisioning_table_records_invalid_total",
    "Stored table records that failed validation on read and were treated as absent.",
    ["table"],
)
BRIDGE_FORWARDED = Counter(
    "provisioning_bridge_forwarded_total", "Messages the bridge forwarded.", ["direction", "topic"]
)
BRIDGE_LAG_SECONDS = Gauge(
    "provisioning_bridge_lag_seconds",
    "Age of the last message the bridge forwarded (publish time to Kafka ack).",
    ["direction", "topic"],
)
TABLE_SIZE = Gauge("provisioning_table_keys", "Keys held locally in each table.", ["table"])
HTTP_LATENCY = Histogram(
    "provisioning_http_request_duration_seconds",
    "REST request latency.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PROVISIONING_ATTEMPTS = Counter(
    "provisioning_backend_attempts_total", "Backend apply attempts.", ["resource", "outcome"]
)
FAILURES = Counter(
    "provisioning_failures_total",
    "Failures isolated to one record, tenant or run of a timer, agent or sweep (which went on).",
    ["component"],
)
COMPUTE_RECOVERED = Counter(
    "provisioning_compute_recovered_releases_total",
    "Compute allocations released by recovery rather than by their own run: kind abandoned (the run's "
    "worker died), leftover (a finished request's token still open) or orphan (found at the provider by label).",
    ["provider", "kind"],
)
COMMANDS_FENCED = Counter(
    "provisioning_commands_fenced_total",
    "Provisioning commands dropped before a backend call: their tenant was deleted or re-created, or a later "
    "command superseded them.",
    ["resource", "action"],
)
PROVISIONING_VERIFIED = Counter(
    "provisioning_verified_without_apply_total",
    "Replayed create commands whose resource verified as planned, so no apply was made.",
    ["resource"],
)
COMMANDS_DEFERRED = Counter(
    "provisioning_commands_deferred_total",
    "Replayed commands not queued because the replay backlog was full; the reconciler starts them later.",
    ["resource"],
)
ORPHANS_REMOVED = Counter(
    "provisioning_orphans_removed_total",
    "Resources of deleted tenants found existing again (a late create) and deleted by the reconciler.",
    ["resource"],
)
RESOURCE_READY_SECONDS = Histogram(
    "provisioning_resource_ready_seconds",
    "Time from a tenant's creation to one of its resources first reported ready (end to end: event, command, "
    "backend call, result).",
    ["resource"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
COMPUTE_ATTEMPTS = Counter(
    "provisioning_compute_attempts_total",
    "Compute allocation attempts, by provider and outcome (running, capacity, timeout, refused...).",
    ["provider", "outcome"],
)
SHARED_CACHE_LOOKUPS = Counter(
    "provisioning_shared_cache_lookups_total",
    "Lookups in the cache shared by the workers (Ignite), by cache and result: hit (from Ignite, also after waiting "
    "for the worker that holds the key's lease), near_hit (a live entry this worker already held) or miss (answered "
    "by an engine call); invalid counts entries that failed validation on read besides (dropped; each also a miss).",
    ["cache", "result"],
)
SHARED_CACHE_ERRORS = Counter(
    "provisioning_shared_cache_errors_total",
    "Failures of the shared cache (connect, get, put, add, delete), each one a miss or a skipped write: requests go "
    "on.",
    ["cache", "operation"],
)
COMPUTE_ENGINE_CALLS = Counter(
    "provisioning_compute_engine_calls_total",
    "Calls to the derivatives engine, by operation (quote, allocate, status, release, release_by_token, capacity, "
    "health) and outcome (ok, error).",
    ["operation", "outcome"],
)
BUILD_INFO = Info("provisioning_build", "The running service's version and its main libraries' versions.")


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


BUILD_INFO.info({
    "version": _version("tenant-provisioning-service"),
    "faust_streaming": _version("faust-streaming"),
    "python": platform.python_version(),
})
