"""The whole local stack: which services exist, and bringing a chosen set up, down, or reporting on it."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from devstack import process
from devstack.base import Service, StackContext
from devstack.errors import DevstackError
from pipeline.config import Settings

#: Service name -> "module:Class". Order is start order for `up` with no names.
SERVICES: dict[str, str] = {
    "kafka": "devstack.kafka:Kafka",
    "pulsar": "devstack.pulsar:Pulsar",
    "prometheus": "devstack.prometheus:Prometheus",
    "cassandra": "devstack.cassandra:Cassandra",
    "ignite": "devstack.ignite:Ignite",
    "elasticsearch": "devstack.elasticsearch:Elasticsearch",
    "s3": "devstack.seaweedfs:SeaweedS3",
    "etcd": "devstack.etcd:Etcd",
    "kubernetes": "devstack.kubernetes:KubeApiServer",
    "openproject": "devstack.openproject:OpenProjectStandIn",
    "derivatives": "devstack.derivatives:DerivativesStandIn",
}


def context(settings: Settings) -> StackContext:
    settings.devstack_cache_dir.mkdir(parents=True, exist_ok=True)
    settings.devstack_home.mkdir(parents=True, exist_ok=True)
    return StackContext(cache_dir=settings.devstack_cache_dir.resolve(), home=settings.devstack_home.resolve())


def load(name: str) -> Service:
    try:
        target = SERVICES[name]
    except KeyError:
        raise DevstackError(name, f"unknown service; choose from {', '.join(SERVICES)}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    service: Service = cls()
    return service


def with_dependencies(names: Iterable[str]) -> list[str]:
    """``names`` plus what they depend on, dependencies first, in registry order."""
    wanted: set[str] = set()

    def visit(name: str) -> None:
        if name in wanted:
            return
        for dep in load(name).depends_on:
            visit(dep)
        wanted.add(name)

    for name in names:
        visit(name)
    return [name for name in SERVICES if name in wanted]


def up(ctx: StackContext, names: Sequence[str] = ()) -> list[Service]:
    """Install what is missing and start ``names`` (all services if empty), waiting until healthy."""
    services = [load(name) for name in with_dependencies(names or list(SERVICES))]
    for service in services:
        service.install(ctx)
    for service in services:
        service.start(ctx)
    return services


def down(ctx: StackContext, names: Sequence[str] = ()) -> list[str]:
    """Stop what this stack started (by pid), in reverse start order; return the names stopped."""
    stopped = []
    for name in reversed(list(names or SERVICES)):
        if load(name).stop(ctx):
            stopped.append(name)
    return stopped


def status(ctx: StackContext, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    rows = []
    for name in names or SERVICES:
        service = load(name)
        pid = service.pid(ctx)
        healthy = service.safe_healthy(ctx)
        rows.append(
            {
                "service": name,
                "address": service.address(ctx),
                "pid": pid,
                "healthy": healthy,
                "started_here": pid is not None,
                "log": str(ctx.log_path(name)) if pid is not None else None,
            }
        )
    return rows


def exports(ctx: StackContext, names: Sequence[str] = ()) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name in names or SERVICES:
        merged.update(load(name).exports(ctx))
    return merged


def status_json(ctx: StackContext, names: Sequence[str] = ()) -> str:
    return json.dumps(status(ctx, names), indent=2)


def service_log_tail(ctx: StackContext, name: str, lines: int = 60) -> str:
    return process.log_tail(ctx.log_path(name), lines)
