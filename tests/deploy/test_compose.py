"""compose.yaml: valid for the Compose Specification (loaded by compose-go, as `docker compose config` does),
its secrets required rather than defaulted, its services' versions the ones the local stack runs, its
monitoring wired to the repository's rules and dashboards. By default it needs nothing from the host but
Docker (no kubeconfig, no stand-in run on the host: the stand-ins are services of their own);
compose.kubernetes.yaml on top of it turns Kubernetes on with the user's kubeconfig."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack import cassandra, elasticsearch, ignite, kafka, pulsar
from devstack.base import StackContext
from devstack.compose_check import compose_check_binary
from devstack.errors import DevstackError
from pipeline.config import Settings

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"PEER_SECRET": "p" * 32, "SNAPSHOT_SIGNING_KEY": "s" * 32, "JWT_SECRET": "j" * 48}
STANDINS = {"openproject-standin": "devstack.openproject_standin",
            "derivatives-standin": "devstack.derivatives_standin"}
#: Where the Dockerfile puts the stand-ins' modules (the services' working_dir).
STANDINS_DIR = "/opt/standins"


@pytest.fixture(scope="module")
def compose_check(stack_ctx: StackContext) -> Path:
    try:
        return compose_check_binary(stack_ctx)
    except DevstackError as exc:
        pytest.fail(f"cannot build compose-check: {exc}", pytrace=False)


def load(binary: Path, path: Path, env: dict[str, str], *overrides: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), str(path), *map(str, overrides)], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env}, cwd=path.parent)


@pytest.fixture(scope="module")
def project(compose_check: Path) -> dict[str, Any]:
    done = load(compose_check, REPO / "compose.yaml", SECRETS)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


@pytest.fixture(scope="module")
def with_kubernetes(compose_check: Path) -> dict[str, Any]:
    done = load(compose_check, REPO / "compose.yaml", SECRETS, REPO / "compose.kubernetes.yaml")
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_compose_yaml_is_a_valid_compose_project(project: dict[str, Any]) -> None:
    assert set(project["services"]) == {"kafka", "pulsar", "prometheus", "grafana", "cassandra", "ignite",
                                        "elasticsearch", "minio", "openproject-standin", "derivatives-standin",
                                        "worker"}
    assert all(service.get("healthcheck") for service in project["services"].values())


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


# -- no host requirement beyond Docker by default --------------------------------------------------------------


def host_binds(project: dict[str, Any]) -> list[tuple[str, str]]:
    """(service, source) of every bind mount of a path outside the repository."""
    return [(name, volume["source"]) for name, service in project["services"].items()
            for volume in service.get("volumes", [])
            if volume["type"] == "bind" and not Path(volume["source"]).is_relative_to(REPO)]


def test_by_default_no_file_of_the_host_is_mounted(project: dict[str, Any]) -> None:
    assert host_binds(project) == []
    worker = project["services"]["worker"]
    assert worker["environment"]["KUBERNETES_ENABLED"] == "false" and "KUBECONFIG" not in worker["environment"]
    assert not Settings(kubernetes_enabled=worker["environment"]["KUBERNETES_ENABLED"]).kubernetes_enabled


def test_by_default_nothing_points_at_the_docker_host(project: dict[str, Any]) -> None:
    for name, service in project["services"].items():
        for where in (service.get("extra_hosts"), service.get("environment"), service.get("command")):
            text = json.dumps(where)
            assert "host.docker.internal" not in text and "host-gateway" not in text, (name, where)
    environment = project["services"]["worker"]["environment"]
    assert environment["OPENPROJECT_URL"] == "http://openproject-standin:8091"
    assert environment["DERIVATIVES_ENGINE_URL"] == "http://derivatives-standin:8092"
    # The worker waits for them, as for the other services it talks to.
    depends = project["services"]["worker"]["depends_on"]
    assert all(depends[name]["condition"] == "service_healthy" for name in STANDINS)


def test_real_services_replace_the_stand_ins_through_the_environment(compose_check: Path) -> None:
    env = {**SECRETS, "OPENPROJECT_URL": "https://openproject.example.com", "OPENPROJECT_API_KEY": "k" * 40,
           "DERIVATIVES_ENGINE_URL": "https://engine.example.com"}
    done = load(compose_check, REPO / "compose.yaml", env)
    assert done.returncode == 0, done.stderr
    environment = json.loads(done.stdout)["services"]["worker"]["environment"]
    assert (environment["OPENPROJECT_URL"], environment["OPENPROJECT_API_KEY"], environment["DERIVATIVES_ENGINE_URL"]) \
        == ("https://openproject.example.com", "k" * 40, "https://engine.example.com")


def test_the_kubernetes_override_mounts_the_kubeconfig_and_turns_kubernetes_on(
    project: dict[str, Any], with_kubernetes: dict[str, Any], compose_check: Path, tmp_path: Path,
) -> None:
    worker = with_kubernetes["services"]["worker"]
    environment = worker["environment"]
    assert (environment["KUBERNETES_ENABLED"], environment["KUBECONFIG"]) == ("true", "/kube/config")
    [mount] = [v for v in worker["volumes"] if v["type"] == "bind"]
    assert (mount["source"], mount["target"], mount["read_only"]) == ("/nonexistent/.kube/config", "/kube/config", True)
    assert mount["bind"]["create_host_path"] is False  # a missing file is an error, not an empty folder
    assert host_binds(with_kubernetes) == [("worker", "/nonexistent/.kube/config")]
    # Everything else is the default project's.
    assert set(with_kubernetes["services"]) == set(project["services"])
    assert {k: v for k, v in worker["environment"].items() if k not in ("KUBERNETES_ENABLED", "KUBECONFIG")} \
        == {k: v for k, v in project["services"]["worker"]["environment"].items() if k != "KUBERNETES_ENABLED"}
    chosen = tmp_path / "config"
    done = load(compose_check, REPO / "compose.yaml", {**SECRETS, "KUBECONFIG_FILE": str(chosen)},
                REPO / "compose.kubernetes.yaml")
    assert done.returncode == 0, done.stderr
    worker = json.loads(done.stdout)["services"]["worker"]
    assert [v["source"] for v in worker["volumes"] if v["type"] == "bind"] == [str(chosen)]


def test_the_worker_environment_names_only_settings(project: dict[str, Any], with_kubernetes: dict[str, Any]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for loaded in (project, with_kubernetes):
        keys = set(loaded["services"]["worker"]["environment"])
        assert keys - fields == set()
    # And the values it sets are accepted by them (secrets come from the test's environment).
    given = {k.lower(): v for k, v in project["services"]["worker"]["environment"].items() if v is not None}
    settings = Settings(**given)
    assert settings.kubernetes_disabled_reason is not None
    assert settings.openproject_url == "http://openproject-standin:8091"


# -- the stand-ins: services from the worker's image -----------------------------------------------------------


def dockerfile_copies() -> dict[str, list[str]]:
    """Destination -> sources of every COPY of the Dockerfile's last stage without --from."""
    last_stage = re.split(r"(?m)^FROM ", (REPO / "Dockerfile").read_text())[-1]
    copies: dict[str, list[str]] = {}
    for line in last_stage.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copies.setdefault(words[-1], []).extend(words[1:-1])
    return copies


@pytest.mark.parametrize("service", list(STANDINS))
def test_each_stand_in_runs_from_the_worker_image_on_all_interfaces(project: dict[str, Any], service: str) -> None:
    standin, worker = project["services"][service], project["services"]["worker"]
    assert (standin["image"], standin["build"]) == (worker["image"], worker["build"])
    assert standin["working_dir"] == STANDINS_DIR
    command = standin["command"]
    assert command[:3] == ["python", "-m", STANDINS[service]]
    module = importlib.import_module(command[2])
    args = module.arguments(command[3:])  # the module's own parser takes the service's arguments
    assert args.host == "0.0.0.0"  # noqa: S104 - reachable by the worker's container
    assert module.arguments([]).host == "127.0.0.1"  # on the host it stays on loopback
    port = str(args.port)
    assert [p["target"] for p in standin["ports"]] == [args.port] and standin["ports"][0]["host_ip"] == "127.0.0.1"
    assert f":{port}/" in " ".join(standin["healthcheck"]["test"])
    assert f"{service}:{port}" in " ".join(str(v) for v in worker["environment"].values())
    # The module is in the image where the service looks for it, with its package.
    relative = Path(*command[2].split(".")).with_suffix(".py")
    assert (REPO / relative).is_file()
    copied = dockerfile_copies()[f"{STANDINS_DIR}/devstack/"]
    assert relative.as_posix() in copied and "devstack/__init__.py" in copied


def test_the_openproject_stand_in_takes_the_workers_default_key(project: dict[str, Any]) -> None:
    command = project["services"]["openproject-standin"]["command"]
    module = importlib.import_module(command[2])
    key = module.arguments(command[3:]).api_key
    assert project["services"]["worker"]["environment"]["OPENPROJECT_API_KEY"] is None  # passed through when set
    assert key == Settings().openproject_api_key.get_secret_value()
    assert f"apikey:{key}" in " ".join(project["services"]["openproject-standin"]["healthcheck"]["test"])


def test_the_stand_ins_are_in_the_image_but_not_in_the_wheel() -> None:
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packaged: Callable[[str], bool] = lambda name: any(fnmatch.fnmatch(name, p) for p in find["include"])  # noqa: E731
    assert not packaged("devstack") and not packaged("devstack.openproject_standin")
    assert packaged("pipeline") and packaged("pipeline.compute")
    # The image installs the wheel (pip install .) and copies nothing else of devstack.
    copied = [source for sources in dockerfile_copies().values() for source in sources]
    assert sorted(s for s in copied if s.startswith("devstack")) == [
        "devstack/__init__.py", "devstack/derivatives_standin.py", "devstack/openproject_standin.py"]


def test_the_build_context_leaves_out_the_local_stack_and_keeps_what_the_image_copies() -> None:
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for heavy in (".git", ".venv", ".devstack", ".data"):
        assert heavy in ignored
    copied = [source for sources in dockerfile_copies().values() for source in sources]
    for source in copied:
        assert not any(fnmatch.fnmatch(source, pattern) or source.startswith(pattern.rstrip("/") + "/")
                       for pattern in ignored), f"{source} is copied by the Dockerfile but ignored"
