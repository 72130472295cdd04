"""OpenProject STAND-IN: our own small server speaking OpenProject's API v3 for projects.

OpenProject itself (a Rails application with PostgreSQL) cannot run on this stack's machines, so the
stack runs :mod:`devstack.openproject_standin` in its place, for tests and ``make run`` only.
It is not OpenProject; see that module for what it follows and where it differs. The provisioner
talks to it exactly as to a real OpenProject (API key over HTTP Basic, user ``apikey``).
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.request

from devstack import process
from devstack.base import PythonModuleService, StackContext
from pipeline.config import Settings

PORT = 8091
#: The default key of pipeline/config.py (OPENPROJECT_API_KEY), so the service works with no settings.
API_KEY: str = Settings.model_fields["openproject_api_key"].default.get_secret_value()


class OpenProjectStandIn(PythonModuleService):
    """The OpenProject API v3 stand-in on 127.0.0.1:8091 (in-memory state, gone on restart)."""

    name = "openproject"
    ports = (PORT,)
    start_timeout = 30.0

    def command(self, ctx: StackContext) -> list[str]:
        return [
            sys.executable,
            "-m",
            "devstack.openproject_standin",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--api-key",
            API_KEY,
        ]

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(PORT):
            return False
        token = base64.b64encode(f"apikey:{API_KEY}".encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{PORT}/api/v3", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=3.0) as response:  # noqa: S310 - fixed local URL
            root: dict[str, object] = json.loads(response.read())
            return response.status == 200 and root.get("_type") == "Root"

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"OPENPROJECT_URL": f"http://127.0.0.1:{PORT}", "OPENPROJECT_API_KEY": API_KEY}

    def address(self, ctx: StackContext) -> str:
        return f"http://127.0.0.1:{PORT}/api/v3 (stand-in)"
