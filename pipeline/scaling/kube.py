"""Applying decisions to the tenant's Deployment through the Kubernetes API (the scale subresource).

The Deployment of workload ``w`` of tenant ``t`` is ``w`` in the tenant's namespace
(:func:`pipeline.provisioners.naming.names_for`, ``tenant-<t>``). :class:`DeploymentScaler` makes the
blocking calls with the official client: it reads the Deployment (``spec.replicas``, ready replicas, and
what one pod requests: CPU, memory, ``nvidia.com/gpu``) and patches ``deployments/<w>/scale`` when the
replica count differs.

:class:`ApplyQueue` runs those calls off the event loop, in a small thread pool: at most one call per
workload at a time, and only the latest request of a workload is kept while one is running (a newer
decision replaces an older one that has not started). Every outcome is handed to ``report`` (the agents
send it to ``scaling-applied``, whose agent writes it into the workload's state).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from pipeline.kube_client import KubeClient
from pipeline.provisioners.naming import names_for
from pipeline.scaling.records import ApplyReport, Observation

logger = logging.getLogger(__name__)

_TIMEOUT = (5.0, 30.0)
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_GIB = Decimal(1024**3)


@dataclass(frozen=True)
class ApplyRequest:
    """Read the workload's Deployment and, when ``replicas`` is set, scale it to that count."""

    tenant_id: str
    workload: str
    replicas: int | None = None


def _quantity(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError):
        return None


def pod_requests(template_spec: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
    """(cpu cores, memory GiB, GPUs) one pod requests: the sum over its containers (limits when no request)."""
    containers = (template_spec or {}).get("containers") or []
    totals: dict[str, Decimal] = {}
    found: set[str] = set()
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        for name in ("cpu", "memory", "nvidia.com/gpu"):
            quantity = _quantity(requests.get(name, limits.get(name)))
            if quantity is not None:
                found.add(name)
                totals[name] = totals.get(name, Decimal(0)) + quantity
    cpu = float(totals["cpu"]) if "cpu" in found else None
    memory = float(totals["memory"] / _GIB) if "memory" in found else None
    gpus = float(totals["nvidia.com/gpu"]) if "nvidia.com/gpu" in found else None
    return cpu, memory, gpus


def observation_of(deployment: dict[str, Any], now: datetime) -> Observation:
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    cpu, memory, gpus = pod_requests((spec.get("template") or {}).get("spec"))
    return Observation(
        exists=True,
        replicas=spec.get("replicas"),
        ready_replicas=status.get("readyReplicas"),
        cpu_per_replica=cpu,
        memory_gib_per_replica=memory,
        gpus_per_replica=gpus,
        observed_at=now,
    )


def scaling_target_of(objects: list[dict[str, Any]], kind: str, deployment: str) -> str | None:
    """``<kind>/<name>`` of the first autoscaler in ``objects`` whose ``spec.scaleTargetRef`` is Deployment
    ``deployment`` (a ScaledObject's ``kind`` defaults to Deployment), or None."""
    for obj in objects:
        target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("name") == deployment and target.get("kind", "Deployment") == "Deployment":
            return f"{kind}/{(obj.get('metadata') or {}).get('name', '?')}"
    return None


class DeploymentScaler:
    """Blocking reads and scale patches of tenants' Deployments (call it from a thread)."""

    def __init__(self, kubeconfig: Path | None = None, *, context: str | None = None) -> None:
        self._kube = KubeClient(kubeconfig, context)

    def _client(self) -> k8s.ApiClient:
        return self._kube.get()

    def close(self) -> None:
        self._kube.close()

    def _where(self, request: ApplyRequest) -> tuple[str, str]:
        namespace = names_for(request.tenant_id).kubernetes_namespace
        if len(request.workload) > 253 or _DNS1123_SUBDOMAIN.fullmatch(request.workload) is None:
            raise ValueError(f"workload {request.workload!r} is not a Deployment name (DNS-1123 subdomain)")
        return namespace, request.workload

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        api = self._client()
        try:
            obj = k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace, _request_timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: dict[str, Any] = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return result

    def _other_autoscaler(self, namespace: str, name: str) -> str | None:
        """The HorizontalPodAutoscaler or KEDA ScaledObject of the namespace that targets Deployment ``name``
        (two controllers setting one replica count fight: the service then only advises)."""
        api = self._client()
        hpas = k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace, _request_timeout=_TIMEOUT)
        found = scaling_target_of(
            [api.sanitize_for_serialization(item) for item in hpas.items],  # type: ignore[no-untyped-call]
            "HorizontalPodAutoscaler", name,
        )
        if found is not None:
            return found
        try:
            scaled: Any = k8s.CustomObjectsApi(api).list_namespaced_custom_object(
                "keda.sh", "v1alpha1", namespace, "scaledobjects", _request_timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:  # KEDA is not installed in this cluster
                return None
            raise
        return scaling_target_of(list(scaled.get("items", [])), "ScaledObject", name)

    def run(self, request: ApplyRequest) -> ApplyReport:
        """Observe the Deployment and scale it when asked; never raises (errors are reported)."""
        now = datetime.now(UTC)
        try:
            namespace, name = self._where(request)
            current = self._read(namespace, name)
            if current is None:
                return ApplyReport(
                    tenant_id=request.tenant_id, workload=request.workload, requested_replicas=request.replicas,
                    observation=Observation(exists=False, observed_at=now), reported_at=now,
                    error=f"Deployment {namespace}/{name} does not exist" if request.replicas is not None else None,
                )
            observed = observation_of(current, now).model_copy(
                update={"scaled_by": self._other_autoscaler(namespace, name)})
            previous = observed.replicas
            if observed.scaled_by is not None and request.replicas is not None and request.replicas != previous:
                return ApplyReport(
                    tenant_id=request.tenant_id, workload=request.workload, requested_replicas=request.replicas,
                    previous_replicas=previous, observation=observed, reported_at=now,
                    error=f"not applied: {observed.scaled_by} already scales Deployment {namespace}/{name}; "
                    "this policy is advisory until that autoscaler is removed",
                )
            if request.replicas is None or request.replicas == previous:
                return ApplyReport(
                    tenant_id=request.tenant_id, workload=request.workload, requested_replicas=request.replicas,
                    previous_replicas=previous, observation=observed, reported_at=now,
                )
            k8s.AppsV1Api(self._client()).patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": request.replicas}}, _request_timeout=_TIMEOUT
            )
            logger.info("scaled %s/%s from %s to %d replicas", namespace, name, previous, request.replicas)
            return ApplyReport(
                tenant_id=request.tenant_id, workload=request.workload, requested_replicas=request.replicas,
                scaled=True, previous_replicas=previous,
                observation=observed.model_copy(update={"replicas": request.replicas}), reported_at=now,
            )
        except ApiException as exc:
            detail = f"Kubernetes API answered {exc.status} {exc.reason}"
        except Exception as exc:  # the connection, the configuration, a bad name
            detail = f"{type(exc).__name__}: {exc}"
        if request.replicas is not None:
            logger.warning("could not scale %s/%s: %s", request.tenant_id, request.workload, detail)
        return ApplyReport(
            tenant_id=request.tenant_id, workload=request.workload, requested_replicas=request.replicas,
            error=detail, reported_at=now,
        )


Reporter = Callable[[ApplyReport], Awaitable[None]]


class ApplyQueue:
    """Runs :class:`ApplyRequest` s in a thread pool: one at a time per workload, the latest one wins."""

    def __init__(self, run: Callable[[ApplyRequest], ApplyReport], report: Reporter, threads: int = 4) -> None:
        self._run = run
        self._report = report
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scaling-apply")
        self._pending: dict[tuple[str, str], ApplyRequest] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def submit(self, request: ApplyRequest) -> None:
        """Queue ``request``; an observe-only request never replaces a pending scale request."""
        key = (request.tenant_id, request.workload)
        pending = self._pending.get(key)
        if pending is None or request.replicas is not None:
            self._pending[key] = request
        running = self._tasks.get(key)
        # A drain that has returned stays in _tasks until its done-callback runs (call_soon, later): a request
        # submitted in between would wait forever for it. Only a task still running takes it.
        if running is None or running.done():
            task = asyncio.create_task(self._drain(key), name=f"scaling-apply-{key[0]}/{key[1]}")
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: tuple[str, str], done: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is done:  # not a newer drain of the same workload
            del self._tasks[key]

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def _drain(self, key: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        while key in self._pending:
            request = self._pending.pop(key)
            report = await loop.run_in_executor(self._executor, self._run, request)
            try:
                await self._report(report)
            except Exception:
                logger.exception("could not report the outcome of %s", request)

    async def idle(self) -> None:
        """Wait until nothing is queued or running (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
