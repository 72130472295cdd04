"""Running real worker processes (``python -m pipeline worker``) for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from devstack.process import log_tail

ROOT = Path(__file__).resolve().parents[2]
#: The workers of one test run share this internal-endpoint secret (the worker refuses to start without one).
PEER_SECRET = "integration-peer-secret-of-32-chars-or-more"  # noqa: S105 (test-only)

T = TypeVar("T")


class WorkerFailed(AssertionError):
    """The worker process exited or never became ready (an AssertionError, so a test using it fails)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T | None:
    """``check()`` until it returns something truthy (returned) or ``timeout`` seconds passed (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


class WorkerProcess:
    """One worker on 127.0.0.1:``port`` with its own data dir; logs to ``log_path``."""

    def __init__(self, env: dict[str, str], port: int, data_dir: Path, log_path: Path) -> None:
        self.env = {"PEER_SECRET": PEER_SECRET, **os.environ, **env, "WEB_PORT": str(port), "DATA_DIR": str(data_dir)}
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise WorkerFailed(f"worker exited with {self.proc.returncode}\n{log_tail(self.log_path, 60)}")
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = exc.read().decode(errors="replace")
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise WorkerFailed(f"worker not ready after {timeout:.0f}s ({last})\n{log_tail(self.log_path, 60)}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str, token: str) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - a loopback URL built here
            f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
