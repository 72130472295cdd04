"""compose.yaml: valid for the Compose Specification (loaded by compose-go, as `docker compose config` does),
its secrets required rather than defaulted, its services' versions the ones the local stack runs, its
monitoring wired to the repository's rules and dashboards."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devstack import cassandra, elasticsearch, ignite, kafka, pulsar
from devstack.base import StackContext
from devstack.compose_check import compose_check_binary
from devstack.errors import DevstackError

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"PEER_SECRET": "p" * 32, "SNAPSHOT_SIGNING_KEY": "s" * 32, "JWT_SECRET": "j" * 48}


@pytest.fixture(scope="module")
def compose_check(stack_ctx: StackContext) -> Path:
    try:
        return compose_check_binary(stack_ctx)
    except DevstackError as exc:
        pytest.fail(f"cannot build compose-check: {exc}", pytrace=False)


def load(binary: Path, path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), str(path)], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env}, cwd=path.parent)


@pytest.fixture(scope="module")
def project(compose_check: Path) -> dict[str, Any]:
    done = load(compose_check, REPO / "compose.yaml", SECRETS)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_compose_yaml_is_a_valid_compose_project(project: dict[str, Any]) -> None:
    assert set(project["services"]) == {"kafka", "pulsar", "prometheus", "grafana", "cassandra", "ignite",
                                        "elasticsearch", "minio", "worker"}
    assert all(service.get("healthcheck") for name, service in project["services"].items() if name != "worker")


def test_the_validator_refuses_what_the_specification_forbids(compose_check: Path, tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("servics:\n  a:\n    image: busybox\n")
    done = load(compose_check, broken, {})
    assert done.returncode == 1 and "additional properties 'servics' not allowed" in done.stderr


def test_the_worker_refuses_to_start_without_its_secrets(compose_check: Path) -> None:
    done = load(compose_check, REPO / "compose.yaml", {k: v for k, v in SECRETS.items() if k != "PEER_SECRET"})
    assert done.returncode == 1 and "required variable PEER_SECRET is missing a value" in done.stderr


def test_services_run_the_versions_the_local_stack_runs(project: dict[str, Any]) -> None:
    tags = {name: service["image"].rsplit(":", 1)[1] for name, service in project["services"].items()}
    assert tags["kafka"] == kafka.KAFKA_VERSION
    assert tags["pulsar"] == pulsar.PULSAR_VERSION
    assert tags["cassandra"] == cassandra.CASSANDRA_VERSION
    assert tags["ignite"] == ignite.IGNITE_VERSION
    assert tags["elasticsearch"] == elasticsearch.ELASTICSEARCH_VERSION


def test_monitoring_is_wired_to_the_repositorys_rules_and_dashboards(project: dict[str, Any]) -> None:
    def mounts(service: str) -> dict[str, str]:
        return {Path(v["source"]).relative_to(REPO).as_posix(): v["target"]
                for v in project["services"][service]["volumes"] if v["type"] == "bind"}

    assert mounts("prometheus")["deploy/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert mounts("grafana")["deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    assert mounts("grafana")["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
