"""Reading a Deployment's requests, and the apply queue (one call per workload at a time, latest wins)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from pipeline.scaling.kube import ApplyQueue, ApplyRequest, DeploymentScaler, observation_of, pod_requests
from pipeline.scaling.records import ApplyReport

NOW = datetime(2026, 5, 4, tzinfo=UTC)


def test_pod_requests_sum_the_containers_and_fall_back_to_limits() -> None:
    spec = {"containers": [
        {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}}},
        {"resources": {"requests": {"cpu": "1.5", "memory": "512Mi"}}},
        {"name": "no-resources"},
    ]}
    assert pod_requests(spec) == (2.0, 1.5, 1.0)
    assert pod_requests({"containers": [{"resources": {}}]}) == (None, None, None)
    assert pod_requests(None) == (None, None, None)


def test_an_observation_reads_the_spec_and_the_status() -> None:
    deployment = {"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"resources": {"requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}}}]}}},
        "status": {"readyReplicas": 2}}
    seen = observation_of(deployment, NOW)
    assert (seen.exists, seen.replicas, seen.ready_replicas) == (True, 3, 2)
    assert (seen.cpu_per_replica, seen.memory_gib_per_replica, seen.gpus_per_replica) == (2.0, 4.0, 1.0)


def test_a_workload_that_is_no_deployment_name_is_reported_not_raised() -> None:
    report = DeploymentScaler(None).run(ApplyRequest("acme", "Not_A_Name", 3))
    assert report.error is not None and "not a Deployment name" in report.error and report.observation is None
    report = DeploymentScaler(None).run(ApplyRequest("Bad Tenant", "api", 3))
    assert report.error is not None and report.requested_replicas == 3


async def test_the_queue_runs_one_call_per_workload_and_keeps_only_the_latest_request() -> None:
    gate = threading.Event()
    started = threading.Event()
    calls: list[ApplyRequest] = []
    reports: list[ApplyReport] = []

    def run(request: ApplyRequest) -> ApplyReport:
        calls.append(request)
        started.set()
        gate.wait(timeout=30)
        return ApplyReport(tenant_id=request.tenant_id, workload=request.workload,
                           requested_replicas=request.replicas, reported_at=NOW)

    async def report(outcome: ApplyReport) -> None:
        reports.append(outcome)

    queue = ApplyQueue(run, report, threads=2)
    try:
        queue.submit(ApplyRequest("acme", "api", 2))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
        queue.submit(ApplyRequest("acme", "api", 3))
        queue.submit(ApplyRequest("acme", "api", 4))
        queue.submit(ApplyRequest("acme", "api"))  # an observation does not replace a pending scale
        assert queue.busy == 1
        gate.set()
        await queue.idle()
    finally:
        queue.close()
    assert [c.replicas for c in calls] == [2, 4]
    assert [r.requested_replicas for r in reports] == [2, 4]


async def test_a_request_submitted_as_the_drain_ends_is_still_run() -> None:
    """The drain returns with nothing pending; its done-callback runs later (call_soon). A request submitted
    between the two must start a new drain rather than wait for the finished one (it stayed pending forever:
    the fair-share integration test once left a Deployment at 3 instead of 2)."""
    calls: list[ApplyRequest] = []
    queue: ApplyQueue

    def run(request: ApplyRequest) -> ApplyReport:
        calls.append(request)
        return ApplyReport(tenant_id=request.tenant_id, workload=request.workload,
                           requested_replicas=request.replicas, reported_at=NOW)

    async def report(outcome: ApplyReport) -> None:
        if outcome.requested_replicas == 3:  # runs after the drain has returned, before its done-callback
            asyncio.get_running_loop().call_soon(queue.submit, ApplyRequest("acme", "api", 2))

    queue = ApplyQueue(run, report, threads=1)
    try:
        queue.submit(ApplyRequest("acme", "api", 3))
        for _ in range(100):  # until the second drain has run too (idle() returns when no drain is left)
            await queue.idle()
            await asyncio.sleep(0)
            if len(calls) == 2:
                break
    finally:
        queue.close()
    assert [c.replicas for c in calls] == [3, 2]


def test_the_autoscaler_targeting_a_deployment_is_found_by_its_scale_target() -> None:
    from pipeline.scaling.kube import scaling_target_of

    hpas = [
        {"metadata": {"name": "web-hpa"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}}},
        {"metadata": {"name": "set-hpa"}, "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "api"}}},
        {"metadata": {"name": "api-hpa"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}}},
    ]
    assert scaling_target_of(hpas, "HorizontalPodAutoscaler", "api") == "HorizontalPodAutoscaler/api-hpa"
    assert scaling_target_of(hpas, "HorizontalPodAutoscaler", "worker") is None
    keda = [{"metadata": {"name": "api-so"}, "spec": {"scaleTargetRef": {"name": "api"}}}]  # kind defaults
    assert scaling_target_of(keda, "ScaledObject", "api") == "ScaledObject/api-so"
    assert scaling_target_of([{"spec": None}, {}], "ScaledObject", "api") is None
