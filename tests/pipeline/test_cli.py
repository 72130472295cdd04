"""``python -m pipeline``: help never acts, dev-token's options, and the REST client commands against the
in-process web app (real aiohttp server on a free port, in-memory state, the compute runtime with the
in-process STAND-IN engine)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click
import jwt
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

import pipeline.bridge
import pipeline.contract.schema_files
import pipeline.rest_client
import pipeline.scaling.backtest.cli
import pipeline.worker
import web.auth
from pipeline.__main__ import main
from pipeline.compute.catalog import load_catalogs
from pipeline.compute.factory import catalog_paths
from pipeline.config import Settings, get_settings
from pipeline.events.models import Tier
from tests.pipeline.compute.support import RuntimeEnv, runtime_env
from tests.web.conftest import ADMIN, SECRET, FakeReadiness, fixed_quota, tenant_event
from tests.web.memory_state import MemoryState
from web.auth import Authenticator
from web.compute import ComputeApi, LocalCompute, operations
from web.server import build_root_app

# Every command and group; test_the_list_names_every_command keeps it complete.
COMMANDS = [
    [], ["worker"], ["bridge"], ["backtest"], ["schemas"], ["dev-token"],
    ["compute"], ["compute", "launch"], ["compute", "status"], ["compute", "down"],
    ["compute", "quote"], ["compute", "list"],
    ["tenants"], ["tenants", "create"], ["tenants", "status"], ["tenants", "delete"],
]


@pytest.fixture
def nothing_acts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every action a command can take, replaced by a recorder."""
    acted: list[str] = []

    def recorder(name: str) -> Any:
        def act(*args: Any, **kwargs: Any) -> Any:
            acted.append(name)
            raise AssertionError(f"{name} ran")
        return act

    monkeypatch.setenv("JWT_SECRET", SECRET)
    get_settings.cache_clear()
    monkeypatch.setattr(pipeline.worker, "run_worker", recorder("worker"))
    monkeypatch.setattr(pipeline.bridge.Bridge, "run_forever", recorder("bridge"))
    monkeypatch.setattr(pipeline.scaling.backtest.cli, "run_backtest", recorder("backtest"))
    monkeypatch.setattr(pipeline.contract.schema_files, "write_schemas", recorder("schemas"))
    monkeypatch.setattr(web.auth, "issue_dev_token", recorder("dev-token"))
    monkeypatch.setattr(pipeline.rest_client.RestClient, "call", recorder("rest"))
    yield acted
    get_settings.cache_clear()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_every_command_prints_usage_and_never_acts(
    command: list[str], flag: str, nothing_acts: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, flag]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out.lower()
    assert nothing_acts == []


def test_the_list_names_every_command() -> None:
    from pipeline.cli import cli

    def paths(group: click.Group, prefix: list[str]) -> list[list[str]]:
        found = [prefix]
        for name, command in group.commands.items():
            found += paths(command, [*prefix, name]) if isinstance(command, click.Group) else [[*prefix, name]]
        return found

    assert sorted(paths(cli, [])) == sorted(COMMANDS)


def test_a_group_or_no_command_shows_usage_and_does_nothing(nothing_acts: list[str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) in (0, 2)
    assert main(["compute"]) in (0, 2)
    assert main(["no-such-command"]) == 2
    assert "usage:" in capsys.readouterr().err.lower() and nothing_acts == []


# -- dev-token --------------------------------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"])
    return decoded


def test_dev_token_takes_tenant_roles_subject_and_lifetime(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    get_settings.cache_clear()
    try:
        assert main(["dev-token", "--tenant", "acme", "--role", "tenant-admin", "--role", "tenant-viewer",
                     "--sub", "bob", "--ttl", "90m"]) == 0
        claims = claims_of(capsys.readouterr().out.strip())
        assert (claims["tenant_id"], claims["sub"]) == ("acme", "bob")
        assert claims["roles"] == ["tenant-admin", "tenant-viewer"]
        assert timedelta(seconds=claims["exp"] - claims["iat"]) == timedelta(minutes=90)

        assert main(["dev-token"]) == 0  # the defaults: a 24-hour platform-admin token
        claims = claims_of(capsys.readouterr().out.strip())
        assert claims["roles"] == ["platform-admin"] and claims["tenant_id"] is None
        assert claims["exp"] - claims["iat"] == 24 * 3600

        for bad in (["--ttl", "0"], ["--ttl", "31d"], ["--ttl", "nan"], ["--ttl", "-1h"], ["--ttl", "1e9"],
                    ["--role", "tenant-admin"], ["--role", "root"], ["--tenant", "Not_A_Tenant"], ["--sub", ""]):
            assert main(["dev-token", *bad]) == 2, bad
            captured = capsys.readouterr()
            assert captured.out == "" and "Error" in captured.err
    finally:
        get_settings.cache_clear()


def test_makefile_development_jwt_secret_is_long_enough_for_hs256() -> None:
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("export JWT_SECRET ?="))
    assert len(line.split("?=", 1)[1].strip().encode()) >= web.auth.MIN_HMAC_BYTES


# -- the REST client commands -----------------------------------------------------------------------------


@dataclass
class Api:
    url: str
    state: MemoryState
    compute: RuntimeEnv


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state = MemoryState(quota_for_tier=fixed_quota)
    await state.submit_tenant(tenant_event("acme", Tier.ENTERPRISE))  # 4 GPUs
    offers = load_catalogs(catalog_paths(Settings(compute_catalog_dir=None)))

    def quota_gpus(tenant_id: str) -> int | None:
        quota = state.stores.quotas.get(tenant_id)
        return quota.limits.gpus if quota is not None else None

    async with runtime_env(offers, quota_gpus=quota_gpus, quota_records=state.stores.quotas.get) as compute:
        local = LocalCompute(compute.runtime, state.stores.tenants.get)
        app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None,
                             extra_operations=operations(ComputeApi(local, None, provision_wait_s=10)))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            yield Api(str(server.make_url("")).rstrip("/"), state, compute)
        finally:
            await server.close()


async def run(api: Api, *args: str, token: str = ADMIN) -> Result:
    """The command line in a thread (its HTTP client blocks; the server runs on this loop)."""
    from pipeline.cli import cli

    env = {"PROVISIONING_API_URL": api.url, "PROVISIONING_TOKEN": token}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, catch_exceptions=False)


async def test_tenants_create_status_and_delete(api: Api) -> None:
    created = await run(api, "tenants", "create", "globex", "--name", "Globex Corp", "--tier", "standard")
    assert created.exit_code == 0, created.output
    assert "globex: accepted" in created.stdout
    assert (await api.state.tenant("globex")) is not None

    plan = await run(api, "tenants", "create", "initech", "--name", "Initech", "--dry-run", "--json")
    assert plan.exit_code == 0 and json.loads(plan.stdout)["dry_run"] is True
    assert await api.state.tenant("initech") is None

    status = await run(api, "tenants", "status", "globex", "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["tenant_id"] == "globex"
    human = await run(api, "tenants", "status", "globex")
    assert human.stdout.startswith("tenant globex: ")

    refused = await run(api, "tenants", "delete", "globex")  # asks first; no answer: nothing sent
    assert refused.exit_code == 1 and await api.state.tenant("globex") is not None
    deleted = await run(api, "tenants", "delete", "globex", "--yes", "--json")
    assert deleted.exit_code == 0 and json.loads(deleted.stdout)["status"] == "accepted"

    missing = await run(api, "tenants", "status", "../provision")
    assert missing.exit_code == 2 and "is not an id" in missing.stderr


async def test_compute_launch_status_and_down(api: Api) -> None:
    launched = await run(api, "compute", "launch", "--tenant", "acme", "--gpu", "H100:4", "--hours", "6",
                         "--max-price", "100", "--json")
    assert launched.exit_code == 0, launched.output
    body = json.loads(launched.stdout)
    assert body["state"] == "running" and body["access"]["ssh_private_key"]
    request_id = body["request_id"]

    table = await run(api, "compute", "status", request_id)
    assert table.exit_code == 0
    assert request_id in table.stdout and "running" in table.stdout and "lambda" in table.stdout
    as_json = json.loads((await run(api, "compute", "status", request_id, "--json")).stdout)
    assert as_json["request_id"] == request_id and as_json["state"] == "running"

    capacity = await run(api, "compute", "status", "--tenant", "acme")
    assert capacity.exit_code == 0 and "gpus in use" in capacity.stdout and "PROVIDER" in capacity.stdout

    down = await run(api, "compute", "down", request_id, "--json")
    assert down.exit_code == 0 and json.loads(down.stdout)["state"] == "terminated"
    assert api.compute.standin.engine.active_allocations() == []


async def test_compute_quote_prints_the_ranked_offers_and_allocates_nothing(api: Api) -> None:
    human = await run(api, "compute", "quote", "--tenant", "acme", "--gpu", "H100:4", "--hours", "6", "--limit", "3")
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    header = next(line for line in lines if line.startswith("#"))
    assert header.split() == ["#", "PROVIDER", "REGION", "INSTANCE", "GPU", "COUNT", "VCPUS", "MEM", "GIB", "SPOT",
                              "DISK", "$/H", "$/HOUR", "TOTAL", "$"]
    rows = lines[lines.index(header) + 1:lines.index(header) + 4]
    assert [row.split()[0] for row in rows] == ["0", "1", "2"] and "lambda" in rows[0]
    assert "Excluded:" in human.stdout and "gpu_type" in human.stdout and "nothing was allocated" in human.stdout
    as_json = json.loads((await run(api, "compute", "quote", "--tenant", "acme", "--gpu", "H100:4", "--hours", "6",
                                    "--json")).stdout)
    assert as_json["offers"][0]["rank"] == 0 and as_json["would_provision"] is True
    assert api.compute.standin.engine.allocate_calls == 0 and api.compute.written == []
    infeasible = await run(api, "compute", "quote", "--tenant", "acme", "--gpu", "H100:4", "--hours", "6",
                           "--max-price", "0.01")
    assert infeasible.exit_code == 0 and "Nothing is feasible" in infeasible.stdout


async def test_compute_launch_with_an_idempotency_key_twice_allocates_once_and_list_shows_it(api: Api) -> None:
    args = ("compute", "launch", "--tenant", "acme", "--cpus", "2", "--hours", "1", "--idempotency-key", "job-7",
            "--json")
    first, second = json.loads((await run(api, *args)).stdout), json.loads((await run(api, *args)).stdout)
    assert first["request_id"] == second["request_id"] and api.compute.standin.engine.allocate_calls == 1
    named = json.loads((await run(api, "compute", "launch", "--tenant", "acme", "--cpus", "2", "--hours", "1",
                                  "--name", "nightly", "--json")).stdout)
    assert named["request_id"] == "acme.nightly"
    listed = await run(api, "compute", "list", "--tenant", "acme", "--limit", "1")
    assert listed.exit_code == 0 and "acme.nightly" in listed.stdout and "more: --cursor" in listed.stdout
    bad = await run(api, *args[:-3], "--idempotency-key", "no spaces")
    assert bad.exit_code == 2 and "--idempotency-key" in bad.stderr


async def test_client_errors_are_named_and_nothing_is_sent_for_bad_input(api: Api) -> None:
    for bad in (["--gpu", "H100:0"], ["--gpu", "H100:x"], ["--hours", "0"], ["--hours", "nan"],
                ["--max-price", "-1"], ["--cpus", "inf"]):
        args = ["compute", "launch", "--tenant", "acme", "--hours", "6", *bad]
        result = await run(api, *args)
        assert result.exit_code == 2, (bad, result.output)
    no_resources = await run(api, "compute", "launch", "--tenant", "acme", "--hours", "6")
    assert no_resources.exit_code == 2 and "at least one GPU" in no_resources.stderr
    assert api.compute.standin.engine.active_allocations() == []

    unknown = await run(api, "compute", "status", "acme.no-such-request")
    assert unknown.exit_code == 1 and "HTTP 404" in unknown.stderr

    infeasible = await run(api, "compute", "launch", "--tenant", "acme", "--gpu", "H100:4", "--hours", "6",
                           "--max-price", "0.01")
    assert infeasible.exit_code == 1 and "HTTP 422" in infeasible.stderr

    forbidden = await run(api, "tenants", "status", "acme", token="not-a-token")
    assert forbidden.exit_code == 1 and "HTTP 401" in forbidden.stderr


async def test_client_without_token_or_server_says_so(api: Api) -> None:
    from pipeline.cli import cli

    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli, ["tenants", "status", "acme"],
                                     env={"PROVISIONING_API_URL": api.url, "PROVISIONING_TOKEN": None})
    assert result.exit_code == 2 and "PROVISIONING_TOKEN is not set" in result.stderr
    closed = Api("http://127.0.0.1:9", api.state, api.compute)  # discard port: nothing listens
    unreachable = await run(closed, "tenants", "status", "acme")
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.stderr
