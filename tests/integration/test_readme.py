"""The README's walkthrough block, run as written (bash, curl -f) against a real worker: the address and the
token are the only things replaced. A step the API refuses (a 4xx after a change of the API or the example)
fails this test, so the README cannot drift from the service."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.harness.tenant_provisioning import SNAPSHOT_SIGNING_KEY, EventPlane
from devstack.harness.worker import WorkerProcess, free_port
from tests.integration.conftest import JWT_SECRET

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- walkthrough -->"


def walkthrough() -> str:
    text = README.read_text()
    match = re.search(re.escape(MARKER) + r"\n```bash\n(.*?)\n```", text, re.DOTALL)
    assert match, f"README.md has no ```bash block after {MARKER}"
    return match.group(1)


def documents(text: str) -> list[dict[str, Any]]:
    """The JSON objects curl printed one after another (its answers end without a newline)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = end
    return found


@pytest.fixture
def worker(event_plane: EventPlane, derivatives_service: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    env = {**event_plane.env(), **derivatives_service, "APP_ID": f"it-readme-{secrets.token_hex(4)}",
           "JWT_SECRET": JWT_SECRET, "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY, "EXECUTOR_ENABLED": "false",
           "STORE": "rocksdb://"}
    request = urllib.request.Request(f"{derivatives_service['DERIVATIVES_ENGINE_URL']}/_standin/reset",  # noqa: S310
                                     data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - the local stand-in
    process = WorkerProcess(env, free_port(), tmp_path / "data", tmp_path / "worker.log").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_the_readme_walkthrough_runs_as_written(worker: WorkerProcess, admin_token: str) -> None:
    script = walkthrough()
    assert "export TOKEN=..." in script and "http://127.0.0.1:6066" in script
    script = script.replace("export TOKEN=...", f"export TOKEN={admin_token}")
    script = script.replace("http://127.0.0.1:6066", worker.url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{worker.log_path.read_text()[-3000:]}"
    # what the block printed: the status, the compute request (running, then released), the policy, decisions
    outputs = documents(done.stdout)
    assert any(o.get("tenant_id") == "acme" and "resources" in o for o in outputs), done.stdout
    assert any(o.get("state") in ("releasing", "terminated") for o in outputs), done.stdout
    assert any(o.get("items") is not None and o.get("tenant_id") == "acme" for o in outputs), done.stdout
