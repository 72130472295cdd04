"""Which provisioning backends answer at all when the worker starts: one log line per backend that does not.

The worker does not wait for the backends (``make run`` starts it as soon as Kafka and Pulsar are healthy,
while the others are still being built or started): the provisioners connect on first use and the executor
waits for a backend it cannot reach (``waiting``). This start-up check only tells the operator, once, which
backends are missing. A TCP connection is all it tries: no request, no credentials.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from pipeline.config import Settings
from pipeline.provisioners.base import RESOURCES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """Where a backend is looked for: the address shown, and the (host, port) pairs to try (any may answer)."""

    address: str
    targets: tuple[tuple[str, int], ...]
    #: Why there is nothing to connect to yet (a kubeconfig file not written yet), if so.
    missing: str | None = None


def _url_target(url: str, default_port: int) -> tuple[str, int] | None:
    try:
        parsed = URL(url if "://" in url else f"http://{url}")
    except ValueError:
        return None
    if not parsed.host:
        return None
    return parsed.host, parsed.explicit_port or (443 if parsed.scheme == "https" else default_port)


def _kube_server(kubeconfig: Path) -> str | None:
    """The API server URL of the kubeconfig's current context (None if it names none)."""
    try:
        document: Any = yaml.safe_load(kubeconfig.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(document, dict):
        return None
    contexts = {c.get("name"): c.get("context") or {} for c in document.get("contexts") or [] if isinstance(c, dict)}
    clusters = {c.get("name"): c.get("cluster") or {} for c in document.get("clusters") or [] if isinstance(c, dict)}
    context = contexts.get(document.get("current-context"))
    cluster = clusters.get(context.get("cluster")) if isinstance(context, dict) else None
    server = cluster.get("server") if isinstance(cluster, dict) else None
    return server if isinstance(server, str) else None


def endpoints(settings: Settings) -> dict[str, Endpoint]:
    """The endpoint of every provisioning backend the settings name (in provisioning order); Kubernetes without
    ``KUBECONFIG`` (in-cluster) is not listed: its address is the pod's environment, not a setting."""
    found: dict[str, Endpoint] = {}
    hosts = settings.cassandra_host_list
    found["cassandra"] = Endpoint(",".join(f"{h}:{settings.cassandra_port}" for h in hosts),
                                  tuple((h, settings.cassandra_port) for h in hosts))
    scheme = "https" if settings.minio_secure else "http"
    urls = {
        "s3": (f"{scheme}://{settings.minio_endpoint}", 80),
        "pulsar": (settings.pulsar_admin_url, 80),
        "openproject": (settings.openproject_url, 80),
        "elasticsearch": (settings.elasticsearch_host, 9200),
    }
    for resource, (url, default_port) in urls.items():
        target = _url_target(url, default_port)
        found[resource] = Endpoint(url, (target,) if target else ())
    found["ignite"] = Endpoint(f"{settings.ignite_host}:{settings.ignite_port}",
                               ((settings.ignite_host, settings.ignite_port),))
    kubeconfig = settings.kubeconfig
    if kubeconfig is not None:
        if not kubeconfig.exists():
            found["kubernetes"] = Endpoint(f"kubeconfig {kubeconfig}", (), missing="the kubeconfig is not written yet")
        else:
            server = _kube_server(kubeconfig)
            target = _url_target(server, 443) if server else None
            found["kubernetes"] = Endpoint(server or f"kubeconfig {kubeconfig}", (target,) if target else ())
    return {resource: found[resource] for resource in RESOURCES if resource in found}


async def _answers(targets: tuple[tuple[str, int], ...], connect_seconds: float) -> bool:
    for host, port in targets:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_seconds)
        except (OSError, TimeoutError):
            continue
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return True
    return False


async def unreachable(found: Mapping[str, Endpoint], connect_seconds: float = 3.0) -> dict[str, str]:
    """Resource -> why, for every endpoint with nothing answering a TCP connection (all tried at once)."""
    async def check(endpoint: Endpoint) -> str | None:
        if endpoint.missing:
            return endpoint.missing
        if not endpoint.targets:
            return None  # nothing to try (an address the settings cannot say): left to the provisioner
        return None if await _answers(endpoint.targets, connect_seconds) else "nothing answers there"

    results = await asyncio.gather(*(check(endpoint) for endpoint in found.values()))
    return {resource: why for resource, why in zip(found, results, strict=True) if why is not None}


async def log_missing_backends(settings: Settings, connect_seconds: float = 3.0) -> dict[str, str]:
    """One WARNING line per provisioning backend that does not answer (the worker goes on); what was missing."""
    found = endpoints(settings)
    missing = await unreachable(found, connect_seconds)
    for resource, why in missing.items():
        logger.warning(
            "backend %s at %s is not reachable (yet: %s); provisioning on it waits for it, up to "
            "PROVISIONING_BACKEND_WAIT_SECONDS=%g s per command", resource, found[resource].address, why,
            settings.provisioning_backend_wait_seconds,
        )
    if not missing:
        logger.info("every provisioning backend answers: %s", ", ".join(found))
    return missing
