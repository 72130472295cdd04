"""The start-up check of the provisioning backends: one warning per backend nothing answers for (issue #16)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.config import Settings
from pipeline.provisioners.base import RESOURCES
from pipeline.provisioners.reachability import endpoints, log_missing_backends


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on (a bare socket: the check only opens a TCP connection)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": server}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    return path


def settings(down: int, up: int, kube: Path | None) -> Settings:
    """Elasticsearch and Pulsar at ``up``, the others at the closed port ``down``."""
    return Settings(
        cassandra_hosts="127.0.0.1", cassandra_port=down, minio_endpoint=f"127.0.0.1:{down}",
        pulsar_admin_url=f"http://127.0.0.1:{up}", ignite_host="127.0.0.1", ignite_port=down,
        elasticsearch_host=f"http://127.0.0.1:{up}", openproject_url=f"http://127.0.0.1:{down}", kubeconfig=kube,
    )


async def test_one_warning_per_backend_nothing_answers_for(
    listening: int, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    down = closed_port()
    kube = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{down}")
    with caplog.at_level(logging.INFO, logger="pipeline.provisioners.reachability"):
        missing = await log_missing_backends(settings(down, listening, kube), connect_seconds=5)
    assert sorted(missing) == sorted(["cassandra", "s3", "openproject", "ignite", "kubernetes"])
    lines = [r for r in caplog.records if r.name == "pipeline.provisioners.reachability"]
    assert len(lines) == 5 and all(r.levelno == logging.WARNING for r in lines)
    text = "\n".join(r.getMessage() for r in lines)
    assert f"backend openproject at http://127.0.0.1:{down} is not reachable" in text
    assert f"backend kubernetes at https://127.0.0.1:{down} is not reachable" in text
    assert "elasticsearch" not in text and "pulsar" not in text


async def test_a_kubeconfig_not_written_yet_is_reported_without_connecting(listening: int, tmp_path: Path) -> None:
    missing = await log_missing_backends(settings(listening, listening, tmp_path / "later" / "kubeconfig"))
    assert missing == {"kubernetes": "the kubeconfig is not written yet"}


async def test_every_backend_answering_is_one_info_line(listening: int, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    kube = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{listening}")
    with caplog.at_level(logging.INFO, logger="pipeline.provisioners.reachability"):
        assert await log_missing_backends(settings(listening, listening, kube)) == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.provisioners.reachability"]
    assert lines == [f"every provisioning backend answers: {', '.join(RESOURCES)}"]


def test_endpoints_follow_the_settings(tmp_path: Path) -> None:
    found = endpoints(Settings(cassandra_hosts="10.0.0.1,10.0.0.2", cassandra_port=9142, minio_endpoint="s3.local",
                               minio_secure=True, elasticsearch_host="https://search.local", kubeconfig=None))
    assert "kubernetes" not in found  # in-cluster: the pod's environment, not a setting
    assert found["cassandra"].targets == (("10.0.0.1", 9142), ("10.0.0.2", 9142))
    assert found["s3"].targets == (("s3.local", 443),) and found["s3"].address == "https://s3.local"
    assert found["elasticsearch"].targets == (("search.local", 443),)
    assert list(found) == [r for r in RESOURCES if r != "kubernetes"]
