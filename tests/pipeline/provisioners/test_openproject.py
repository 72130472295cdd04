"""The OpenProject provisioner against the local API v3 stand-in, checked with plain API v3 calls."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from pipeline.provisioners.base import TenantSpec
from pipeline.provisioners.errors import PermanentError
from pipeline.provisioners.openproject import OpenProjectProvisioner
from pipeline.provisioners.tiers import TiersConfig
from tests.pipeline.provisioners.conftest import (
    applied,
    assert_deletes_only_this_tenant,
    deleted_after,
    provisioner_fixture,
)

pytestmark = pytest.mark.integration


provisioner = provisioner_fixture(OpenProjectProvisioner)


class Api:
    """Direct API v3 calls, as any OpenProject client makes them."""

    def __init__(self, exports: dict[str, str]) -> None:
        self.url = exports["OPENPROJECT_URL"].rstrip("/") + "/api/v3"
        token = base64.b64encode(f"apikey:{exports['OPENPROJECT_API_KEY']}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers=self.headers) as session, session.request(
            method, self.url + path, json=body
        ) as response:
            return response.status, await response.json(content_type=None)

    async def projects_with_identifier(self, identifier: str) -> list[dict[str, Any]]:
        status, body = await self.call("GET", "/projects?pageSize=1000")
        assert status == 200
        return [p for p in body["_embedded"]["elements"] if p["identifier"] == identifier]


@pytest.fixture
def api(openproject_service: dict[str, str]) -> Api:
    return Api(openproject_service)


async def test_apply_creates_one_project_and_is_idempotent(
    provisioner: OpenProjectProvisioner, api: Api, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("enterprise", name="Acme — Ünïcode & \"quotes\"")
    identifier = tenant.names().openproject_identifier
    async with deleted_after(provisioner, tenant):
        first = await provisioner.apply(tenant)
        second = await provisioner.apply(tenant)
        assert first == second
        projects = await api.projects_with_identifier(identifier)
        assert len(projects) == 1
        project = projects[0]
        assert project["name"] == tenant.name
        assert project["public"] is False and project["active"] is True
        assert project["id"] == first.settings["id"]
        assert (await provisioner.verify(tenant)).ok


async def test_verify_detects_drift_and_apply_repairs_it(
    provisioner: OpenProjectProvisioner, api: Api, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant()
    identifier = tenant.names().openproject_identifier
    async with deleted_after(provisioner, tenant):
        plan = await provisioner.apply(tenant)
        status, _ = await api.call("PATCH", f"/projects/{plan.settings['id']}", {"name": "renamed by hand"})
        assert status == 200
        drift = await provisioner.verify(tenant)
        assert drift.drifted and [d.path for d in drift.differences] == ["name"]
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok

        status, _ = await api.call("DELETE", f"/projects/{plan.settings['id']}")
        assert status == 204
        gone = await provisioner.verify(tenant)
        assert not gone.exists and gone.missing == [f"project {identifier}"]
        await provisioner.apply(tenant)
        assert len(await api.projects_with_identifier(identifier)) == 1


async def test_delete_removes_only_this_tenants_project(
    provisioner: OpenProjectProvisioner, api: Api, make_tenant: Callable[..., TenantSpec]
) -> None:
    async def projects(of: TenantSpec) -> int:
        return len(await api.projects_with_identifier(of.names().openproject_identifier))

    tenant, other = make_tenant(), make_tenant()
    async with applied(provisioner, tenant, other):
        await assert_deletes_only_this_tenant(
            provisioner, tenant, other, [f"project {tenant.names().openproject_identifier}"], projects)


async def test_a_wrong_api_key_is_a_permanent_error(
    openproject_service: dict[str, str], tiers: TiersConfig, make_tenant: Callable[..., TenantSpec]
) -> None:
    provisioner = OpenProjectProvisioner(tiers, openproject_service["OPENPROJECT_URL"], "wrong-key")
    try:
        with pytest.raises(PermanentError, match="401"):
            await provisioner.apply(make_tenant())
    finally:
        await provisioner.aclose()
