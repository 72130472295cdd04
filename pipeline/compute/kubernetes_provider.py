"""The in-house Kubernetes cluster as one more compute provider.

An allocation is a Pod with the requested resources (GPUs as the extended resource ``nvidia.com/gpu``)
in the tenant's namespace (``tenant-<tenant_id>``), plus a Secret holding the Jupyter token (so the
token is not in the Pod spec). Both are created and deleted with the official ``kubernetes`` client;
its synchronous calls run in ``asyncio.to_thread``. Prices come from configuration
(:class:`KubernetesProviderConfig`): per GPU-hour by GPU type, per vCPU-hour and per GiB-hour, applied
to configured shapes that become :class:`~pipeline.compute.catalog.Offer` objects.

Names are never "sanitised" (two tenants could collide): a tenant id that is not a DNS-1123 label
(lower-case alphanumerics and ``-``, starting and ending alphanumeric, namespace at most 63 chars) is
refused with :class:`UnsafeName`.

Integration test against the real kube-apiserver: ``tests/integration/test_compute.py`` (through a worker:
the Pod and its Secret are created in the tenant's namespace and deleted on ``DELETE``). That API server
runs no scheduler, so Pods stay ``Pending``; ``running_on_create`` makes a created Pod count as running
there. The pure parts (names, manifests, prices, phase mapping) are unit-tested.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.compute.backend import (
    AccessSetup,
    AllocationHandle,
    AllocationRefused,
    AllocationState,
    BackendError,
    BackendUnavailable,
    CapacityUnavailable,
    InvalidRequest,
    ListedAllocation,
)
from pipeline.compute.catalog import Offer, make_offer_id
from pipeline.compute.request import ComputeRequest
from pipeline.kube_client import KubeClient

logger = logging.getLogger(__name__)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LABEL = 63
MANAGED_BY = "provisioning-service"
LABEL_TENANT = "compute.platform/tenant"
LABEL_TOKEN = "compute.platform/client-token"  # noqa: S105 - a label name, not a secret
ANNOTATION_OFFER = "compute.platform/offer-id"
SECRET_KEY = "jupyter-token"  # noqa: S105 - the key name inside the Secret


class UnsafeName(ValueError):
    """A tenant id / name that is not a DNS-1123 label; refused, never rewritten."""


def check_dns1123_label(value: str, what: str = "name") -> str:
    if not value or len(value) > MAX_LABEL or not DNS1123_LABEL.fullmatch(value):
        raise UnsafeName(
            f"{what} {value!r} is not a DNS-1123 label (lower-case a-z, 0-9 and '-', starting and "
            f"ending alphanumeric, at most {MAX_LABEL} characters)"
        )
    return value


def tenant_namespace(tenant_id: str, prefix: str = "tenant-") -> str:
    """The tenant's namespace; refuses tenant ids that are not safe DNS-1123 labels."""
    check_dns1123_label(tenant_id, "tenant id")
    return check_dns1123_label(f"{prefix}{tenant_id}", "namespace")


def pod_name(client_token: str) -> str:
    """Pod name of an attempt (deterministic from the client token, so allocate is idempotent)."""
    token = client_token.lower()
    check_dns1123_label(token[:40], "client token")
    return check_dns1123_label(f"compute-{token[:40]}", "pod name")


def cpu_quantity(vcpus: float) -> str:
    return f"{max(round(vcpus * 1000), 1)}m"


def memory_quantity(gib: float) -> str:
    return f"{max(math.ceil(gib * 1024), 1)}Mi"


class KubernetesShape(BaseModel):
    """A priced machine shape of the in-house cluster (becomes an offer)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    name: str
    gpu_name: str | None = None
    gpu_count: int = Field(default=0, ge=0)
    vcpus: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    capacity: int = Field(default=1, ge=0)

    @field_validator("name")
    @classmethod
    def _safe(cls, value: str) -> str:
        return check_dns1123_label(value, "shape name")


class KubernetesProviderConfig(BaseModel):
    """Configuration of the in-house provider (prices in USD per hour)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    provider: str = "kubernetes"
    region: str = "in-house"
    namespace_prefix: str = "tenant-"
    image: str = "quay.io/jupyter/base-notebook:latest"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product_label: str | None = "nvidia.com/gpu.product"
    gpu_products: dict[str, str] = Field(default_factory=dict)
    price_per_gpu_hour: dict[str, float] = Field(default_factory=dict)
    price_per_vcpu_hour: float = Field(default=0.02, ge=0)
    price_per_gib_hour: float = Field(default=0.003, ge=0)
    shapes: list[KubernetesShape] = Field(default_factory=list)
    priority_class_name: str | None = None
    ssh_port: int = 2222
    jupyter_port: int = 8888
    request_timeout_s: float = Field(default=30.0, gt=0)
    #: A created Pod counts as ``running`` without waiting for it to be scheduled and Ready. Only for a
    #: cluster without scheduler and kubelets (the local stack's bare kube-apiserver), never in production.
    running_on_create: bool = False

    def shape_price(self, shape: KubernetesShape) -> float:
        gpu_price = 0.0
        if shape.gpu_name and shape.gpu_count:
            if shape.gpu_name not in self.price_per_gpu_hour:
                raise ValueError(f"no price_per_gpu_hour for GPU type {shape.gpu_name}")
            gpu_price = self.price_per_gpu_hour[shape.gpu_name] * shape.gpu_count
        return gpu_price + shape.vcpus * self.price_per_vcpu_hour + shape.memory_gib * self.price_per_gib_hour

    def offers(self) -> list[Offer]:
        return [
            Offer(
                offer_id=make_offer_id(self.provider, self.region, shape.name, "on_demand"),
                provider=self.provider,
                region=self.region,
                instance_type=shape.name,
                gpu_name=shape.gpu_name if shape.gpu_count else None,
                gpu_count=shape.gpu_count if shape.gpu_name else 0,
                vcpus=shape.vcpus,
                memory_gib=shape.memory_gib,
                capacity_class="on_demand",
                price_per_hour=round(self.shape_price(shape), 6),
                source="kubernetes",
                capacity=shape.capacity,
            )
            for shape in self.shapes
        ]


#: Selects every object this provider creates (Pods and their Secrets), in every namespace.
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component=compute"


def token_selector(client_token: str) -> str:
    """The label selector of the objects of one allocation."""
    return f"{MANAGED_SELECTOR},{LABEL_TOKEN}={client_token.lower()[:MAX_LABEL]}"


def _labels(tenant_id: str, client_token: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": "compute",
        LABEL_TENANT: tenant_id,
        LABEL_TOKEN: client_token.lower()[:MAX_LABEL],
    }


def build_secret_manifest(
    config: KubernetesProviderConfig, *, tenant_id: str, client_token: str, jupyter_token: str
) -> dict[str, Any]:
    """The Secret holding the Jupyter token (contains a secret: never log the result)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": f"{pod_name(client_token)}-access",
            "namespace": tenant_namespace(tenant_id, config.namespace_prefix),
            "labels": _labels(tenant_id, client_token),
        },
        "stringData": {SECRET_KEY: jupyter_token},
    }


def build_pod_manifest(
    config: KubernetesProviderConfig,
    *,
    request: ComputeRequest,
    offer: Offer,
    client_token: str,
    ssh_public_key: str,
) -> dict[str, Any]:
    """The Pod of an allocation: the requested resources (at least 1 vCPU-milli and 1 MiB), GPUs as the
    extended resource (requests == limits, as Kubernetes requires), hardened, deleted by the kubelet at
    the end of the duration (``activeDeadlineSeconds``) as a backstop to our own termination."""
    tenant_id = request.tenant_id
    name = pod_name(client_token)
    namespace = tenant_namespace(tenant_id, config.namespace_prefix)
    res = request.resources
    quantities: dict[str, str] = {
        "cpu": cpu_quantity(res.vcpus or 1.0),
        "memory": memory_quantity(res.memory_gib or 1.0),
    }
    if res.storage_gib > 0:
        quantities["ephemeral-storage"] = f"{math.ceil(res.storage_gib)}Gi"
    if res.gpu_count:
        quantities[config.gpu_resource] = str(res.gpu_count)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": max(math.ceil(request.duration_hours * 3600), 1),
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "workspace",
                "image": config.image,
                "resources": {"requests": dict(quantities), "limits": dict(quantities)},
                "env": [
                    {"name": "SSH_AUTHORIZED_KEYS", "value": ssh_public_key},
                    {
                        "name": "JUPYTER_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": f"{name}-access", "key": SECRET_KEY}},
                    },
                ],
                "ports": [
                    {"name": "ssh", "containerPort": config.ssh_port},
                    {"name": "jupyter", "containerPort": config.jupyter_port},
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    if res.gpu is not None:
        spec["tolerations"] = [{"key": config.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
        product = config.gpu_products.get(res.gpu.type)
        if config.gpu_product_label and product:
            spec["nodeSelector"] = {config.gpu_product_label: product}
    if config.priority_class_name:
        spec["priorityClassName"] = config.priority_class_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": _labels(tenant_id, client_token),
            "annotations": {ANNOTATION_OFFER: offer.offer_id},
        },
        "spec": spec,
    }


def state_of_pod(phase: str | None, ready: bool, deleting: bool = False) -> AllocationState:
    """Pod phase -> allocation state."""
    if deleting:
        return AllocationState.RELEASED
    if phase == "Running" and ready:
        return AllocationState.RUNNING
    if phase in ("Failed", "Succeeded", "Unknown"):
        return AllocationState.FAILED
    return AllocationState.PROVISIONING


def _api_error(exc: Exception, what: str) -> BackendError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or type(exc).__name__
    body = str(getattr(exc, "body", "") or "")[:300]
    text = f"{what}: {status or ''} {reason} {body}".strip()
    if status is None or (isinstance(status, int) and status >= 500) or status == 0:
        return BackendUnavailable(text, status=status or None)
    if status == 403 and "exceeded quota" in body:
        return CapacityUnavailable(text, status=status)
    if status in (401, 403, 404):  # 404: the tenant's namespace does not exist
        return AllocationRefused(text, status=status)
    if status in (400, 422):
        return InvalidRequest(text, status=status)
    return AllocationRefused(text, status=status)


class KubernetesComputeProvider:
    """Allocation backend for the in-house cluster (implements ``ComputeBackend``).

    ``api`` is a ``kubernetes.client.CoreV1Api`` (or anything with the same methods); by default one is
    built from ``kubeconfig`` (path) or the in-cluster configuration.
    """

    def __init__(
        self, config: KubernetesProviderConfig, api: Any | None = None, *, kubeconfig: str | None = None
    ) -> None:
        self.config = config
        self._api = api
        self._kube = KubeClient(kubeconfig)
        self._lock = threading.Lock()
        self._tombstones: set[str] = set()
        self._namespaces: dict[str, str] = {}

    def _core(self) -> Any:
        if self._api is None:
            from kubernetes import client

            self._api = client.CoreV1Api(self._kube.get())
        return self._api

    def offers(self) -> list[Offer]:
        return self.config.offers()

    @staticmethod
    def allocation_id(namespace: str, name: str) -> str:
        return f"{namespace}/{name}"

    @staticmethod
    def _split(allocation_id: str) -> tuple[str, str]:
        namespace, _, name = allocation_id.partition("/")
        check_dns1123_label(namespace, "namespace")
        check_dns1123_label(name, "pod name")
        return namespace, name

    def _handle(self, pod: Any, client_token: str) -> AllocationHandle:
        meta, status = pod.metadata, pod.status
        ready = any(
            c.type == "Ready" and c.status == "True" for c in (getattr(status, "conditions", None) or [])
        )
        state = state_of_pod(getattr(status, "phase", None), ready, meta.deletion_timestamp is not None)
        if state is AllocationState.PROVISIONING and self.config.running_on_create:
            state = AllocationState.RUNNING
        return AllocationHandle(
            allocation_id=self.allocation_id(meta.namespace, meta.name),
            client_token=client_token,
            offer_id=(meta.annotations or {}).get(ANNOTATION_OFFER, ""),
            state=state,
            host=getattr(status, "pod_ip", None),
            ssh_port=self.config.ssh_port,
            message=getattr(status, "message", None),
        )

    def _delete_sync(self, namespace: str, name: str) -> bool:
        api, timeout, deleted = self._core(), self.config.request_timeout_s, False
        for delete, target in ((api.delete_namespaced_pod, name), (api.delete_namespaced_secret, f"{name}-access")):
            try:
                delete(target, namespace, grace_period_seconds=0, _request_timeout=timeout)
                deleted = True
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise
        return deleted

    def _create_sync(
        self, request: ComputeRequest, offer: Offer, client_token: str, setup: AccessSetup
    ) -> AllocationHandle:
        api, timeout = self._core(), self.config.request_timeout_s
        pod = build_pod_manifest(
            self.config, request=request, offer=offer, client_token=client_token, ssh_public_key=setup.ssh_public_key
        )
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        secret = build_secret_manifest(
            self.config,
            tenant_id=request.tenant_id,
            client_token=client_token,
            jupyter_token=setup.jupyter_token.get_secret_value(),
        )
        for create, body in ((api.create_namespaced_secret, secret), (api.create_namespaced_pod, pod)):
            try:
                create(namespace, body, _request_timeout=timeout)
            except Exception as exc:
                if getattr(exc, "status", None) != 409:  # 409: already exists (idempotent retry)
                    raise
        with self._lock:
            released_meanwhile = client_token in self._tombstones
        if released_meanwhile:  # the caller gave up while we were creating: do not leak
            self._delete_sync(namespace, name)
            raise AllocationRefused(f"client token {client_token} was released during creation")
        created = api.read_namespaced_pod(name, namespace, _request_timeout=timeout)
        return self._handle(created, client_token)

    async def allocate(
        self, offer: Offer, request: ComputeRequest, *, client_token: str, setup: AccessSetup
    ) -> AllocationHandle:
        try:
            namespace = tenant_namespace(request.tenant_id, self.config.namespace_prefix)
            pod_name(client_token)
        except UnsafeName as exc:
            raise InvalidRequest(str(exc)) from exc
        with self._lock:
            if client_token in self._tombstones:
                raise AllocationRefused(f"client token {client_token} was released")
            self._namespaces[client_token] = namespace
        try:
            handle = await asyncio.to_thread(self._create_sync, request, offer, client_token, setup)
        except BackendError:
            raise
        except Exception as exc:
            raise _api_error(exc, f"create pod in {namespace}") from exc
        logger.info("kubernetes allocated %s for offer %s", handle.allocation_id, offer.offer_id)
        return handle

    async def status(self, allocation_id: str) -> AllocationHandle:
        namespace, name = self._split(allocation_id)

        def read() -> Any:
            return self._core().read_namespaced_pod(name, namespace, _request_timeout=self.config.request_timeout_s)

        try:
            pod = await asyncio.to_thread(read)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return AllocationHandle(
                    allocation_id=allocation_id, client_token="", offer_id="", state=AllocationState.RELEASED
                )
            raise _api_error(exc, f"read pod {allocation_id}") from exc
        token = (pod.metadata.labels or {}).get(LABEL_TOKEN, "")
        return self._handle(pod, token)

    async def release(self, allocation_id: str) -> None:
        namespace, name = self._split(allocation_id)
        try:
            await asyncio.to_thread(self._delete_sync, namespace, name)
        except Exception as exc:
            raise _api_error(exc, f"delete pod {allocation_id}") from exc
        logger.info("kubernetes released %s", allocation_id)

    async def release_by_token(self, client_token: str) -> None:
        """Delete the token's Pod and Secret. Where they are is asked of the API server (by label, in
        every namespace) unless this instance created them: after a restart nothing is in memory."""
        with self._lock:
            self._tombstones.add(client_token)
            namespace = self._namespaces.get(client_token)
        if namespace is not None:
            await self.release(self.allocation_id(namespace, pod_name(client_token)))
            return
        try:
            found = await asyncio.to_thread(self._find_sync, token_selector(client_token))
        except Exception as exc:
            raise _api_error(exc, f"list objects of token {client_token}") from exc
        for namespace, name in sorted(found):
            await self.release(self.allocation_id(namespace, name))

    def _find_sync(self, selector: str) -> set[tuple[str, str]]:
        """(namespace, Pod name) of every managed Pod or Secret matching ``selector`` (a Secret counts
        under its Pod's name: a crash between creating the two leaves only the Secret)."""
        api, timeout = self._core(), self.config.request_timeout_s
        found = set()
        for pod in api.list_pod_for_all_namespaces(label_selector=selector, _request_timeout=timeout).items:
            found.add((pod.metadata.namespace, pod.metadata.name))
        for secret in api.list_secret_for_all_namespaces(label_selector=selector, _request_timeout=timeout).items:
            name = secret.metadata.name
            found.add((secret.metadata.namespace, name.removesuffix("-access")))
        return found

    async def list_allocations(self) -> list[ListedAllocation]:
        """Every allocation this provider manages, found by label in every namespace (Pods, and Secrets
        left without their Pod): what the orphan sweep compares with the records."""

        def listed() -> list[ListedAllocation]:
            api, timeout = self._core(), self.config.request_timeout_s
            out: dict[tuple[str, str], ListedAllocation] = {}
            objects = [
                *api.list_pod_for_all_namespaces(label_selector=MANAGED_SELECTOR, _request_timeout=timeout).items,
                *api.list_secret_for_all_namespaces(label_selector=MANAGED_SELECTOR, _request_timeout=timeout).items,
            ]
            for obj in objects:
                meta = obj.metadata
                labels = meta.labels or {}
                token, tenant = labels.get(LABEL_TOKEN), labels.get(LABEL_TENANT)
                if not token or not tenant:
                    continue
                name = meta.name.removesuffix("-access")
                key = (meta.namespace, name)
                if key not in out:
                    out[key] = ListedAllocation(
                        allocation_id=self.allocation_id(meta.namespace, name), client_token=token,
                        tenant_id=tenant, created_at=meta.creation_timestamp,
                    )
            return list(out.values())

        try:
            return await asyncio.to_thread(listed)
        except Exception as exc:
            raise _api_error(exc, "list compute allocations") from exc
