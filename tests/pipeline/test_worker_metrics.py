"""The scrape-time worker metrics: readiness and consumer lag, on a registry of their own."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.worker_metrics import WorkerCollector, register


def scrape(registry: CollectorRegistry) -> list[str]:
    return generate_latest(registry).decode().splitlines()


def test_ready_and_lag_are_read_at_each_scrape() -> None:
    state: dict[str, object] = {"ready": False, "lag": {"tenant-created-events": 7, "resource-metrics": 0}}

    def readiness() -> tuple[bool, str]:
        return bool(state["ready"]), "test"

    def lag() -> Mapping[str, int]:
        value = state["lag"]
        assert isinstance(value, dict)
        return value

    registry = CollectorRegistry()
    register(WorkerCollector(readiness, lag), registry)
    lines = scrape(registry)
    assert "provisioning_ready 0.0" in lines
    assert 'provisioning_consumer_lag_messages{topic="tenant-created-events"} 7.0' in lines
    assert 'provisioning_consumer_lag_messages{topic="resource-metrics"} 0.0' in lines
    state.update(ready=True, lag={"tenant-created-events": 0})
    lines = scrape(registry)
    assert "provisioning_ready 1.0" in lines
    assert 'provisioning_consumer_lag_messages{topic="tenant-created-events"} 0.0' in lines
    assert not any('topic="resource-metrics"' in line for line in lines)


def test_a_failing_probe_reads_as_not_ready_and_no_lag_never_as_a_failed_scrape() -> None:
    def broken_readiness() -> tuple[bool, str]:
        raise RuntimeError("consumer not started")

    def broken_lag() -> Mapping[str, int]:
        raise KeyError("revoked during the scrape")

    registry = CollectorRegistry()
    register(WorkerCollector(broken_readiness, broken_lag), registry)
    lines = scrape(registry)
    assert "provisioning_ready 0.0" in lines
    assert not any(line.startswith("provisioning_consumer_lag_messages{") for line in lines)


def test_registering_again_replaces_the_earlier_collector() -> None:
    registry = CollectorRegistry()
    register(WorkerCollector(lambda: (False, ""), lambda: {}), registry)
    register(WorkerCollector(lambda: (True, ""), lambda: {"t": 1}), registry)
    lines = scrape(registry)
    assert lines.count("provisioning_ready 1.0") == 1 and "provisioning_ready 0.0" not in lines
