"""Derivatives engine STAND-IN: :mod:`devstack.derivatives_standin` as a local service.

The platform's derivatives engine (partner capacity at wholesale prices) cannot run on this stack's
machines, so the stack runs our stand-in in its place, for tests and ``make run`` only. It implements the
engine's v1 contract (``docs/compute.md``), quotes the packaged real catalogs (Lambda, Nebius, Verda),
keeps allocated capacity per pool in memory (gone on restart) and can be told to fail over HTTP
(``/_standin/faults``, ``/_standin/capacity``, ``/_standin/reset``, ``/_standin/state``). It is not the
engine: no auth, no persistence, no billing.
"""

from __future__ import annotations

import json
import sys
import urllib.request

from devstack import process
from devstack.base import PythonModuleService, StackContext
from pipeline.compute.catalog import PACKAGED_CATALOG_DIR

PORT = 8092
#: Instances per pool (provider, region, instance type) the stand-in starts with.
CAPACITY = 4


class DerivativesStandIn(PythonModuleService):
    """The derivatives-engine stand-in on 127.0.0.1:8092."""

    name = "derivatives"
    ports = (PORT,)
    start_timeout = 30.0

    def command(self, ctx: StackContext) -> list[str]:
        return [
            sys.executable,
            "-m",
            "devstack.derivatives_standin",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--catalog-dir",
            str(PACKAGED_CATALOG_DIR),
            "--capacity",
            str(CAPACITY),
        ]

    def healthy(self, ctx: StackContext) -> bool:
        """The contract's health call answers, and it is the stand-in (it has offers to quote)."""
        if not process.port_in_use(PORT):
            return False
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/health", timeout=3.0) as response:
            health: dict[str, object] = json.loads(response.read())
        if response.status != 200 or health.get("status") != "ok" or health.get("standin") is not True:
            return False
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/capacity", timeout=3.0) as response:
            capacity: dict[str, list[object]] = json.loads(response.read())
        return response.status == 200 and len(capacity.get("pools", [])) > 0

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"DERIVATIVES_ENGINE_URL": f"http://127.0.0.1:{PORT}"}

    def address(self, ctx: StackContext) -> str:
        return f"http://127.0.0.1:{PORT}/v1 (stand-in)"
