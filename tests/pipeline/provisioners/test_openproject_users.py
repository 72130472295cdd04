"""OpenProject per-user access: memberships through API v3, against the stand-in served in this process.

The shared local stack's stand-in may be an older build without the users/roles/memberships endpoints (it is
started once for everyone), so these tests serve ``devstack.openproject_standin.create_app`` themselves: the
same code the stack runs, on a free port of this process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from devstack.openproject_standin import create_app
from pipeline.provisioners.base import TenantSpec, UserGrant, UserRole
from pipeline.provisioners.errors import PermanentError, TransientError
from pipeline.provisioners.openproject import OpenProjectProvisioner
from pipeline.provisioners.tiers import TiersConfig

KEY = "test-key"
ERRORS = "urn:openproject-org:api:v3:errors:"


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async with TestServer(create_app(KEY)) as served:
        yield served


@pytest.fixture
async def provisioner(server: TestServer, tiers: TiersConfig) -> AsyncIterator[OpenProjectProvisioner]:
    built = OpenProjectProvisioner(tiers, str(server.make_url("")), KEY)
    yield built
    await built.aclose()


@pytest.fixture
async def api(server: TestServer) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": aiohttp.encode_basic_auth("apikey", KEY)}
    async with aiohttp.ClientSession(base_url=str(server.make_url("")), headers=headers) as session:
        yield session


async def call(api: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with api.request(method, path, json=body) as response:
        return response.status, await response.json(content_type=None) if response.status != 204 else None


async def members(api: aiohttp.ClientSession, project_id: int) -> list[tuple[str, list[str]]]:
    filters = f'[{{"project":{{"operator":"=","values":["{project_id}"]}}}}]'
    status, body = await call(api, "GET", f"/api/v3/memberships?filters={filters}")
    assert status == 200
    return [(m["_links"]["principal"]["title"], [r["title"] for r in m["_links"]["roles"]])
            for m in body["_embedded"]["elements"]]


async def test_grant_adds_a_membership_with_the_roles_project_role_idempotently_and_revoke_removes_it(
    provisioner: OpenProjectProvisioner, api: aiohttp.ClientSession, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    plan = await provisioner.apply(tenant)
    project_id = plan.settings["id"]
    viewer = UserGrant(user_id="dana@example.com", role=UserRole.VIEWER, email="dana@example.com")

    await provisioner.grant_user(tenant, viewer)
    assert await members(api, project_id) == [("dana@example.com", ["Reader"])]
    assert (await provisioner.verify_user(tenant, viewer)).ok
    await provisioner.grant_user(tenant, viewer)  # twice: one membership, one user
    assert await members(api, project_id) == [("dana@example.com", ["Reader"])]
    _, users = await call(api, "GET", "/api/v3/users")
    assert [u["login"] for u in users["_embedded"]["elements"]].count("dana@example.com") == 1

    admin = viewer.model_copy(update={"role": UserRole.ADMIN})
    assert not (await provisioner.verify_user(tenant, admin)).ok
    await provisioner.grant_user(tenant, admin)
    assert await members(api, project_id) == [("dana@example.com", ["Project admin"])]

    assert await provisioner.revoke_user(tenant, admin) is True
    assert await members(api, project_id) == []
    assert await provisioner.revoke_user(tenant, admin) is False  # a missing grant: success
    assert not (await provisioner.verify_user(tenant, admin)).ok


async def test_grant_before_the_project_exists_is_transient_and_a_user_without_email_cannot_be_created(
    provisioner: OpenProjectProvisioner, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    user = UserGrant(user_id="erin", role=UserRole.EDITOR)
    with pytest.raises(TransientError):
        await provisioner.grant_user(tenant, user)
    assert await provisioner.revoke_user(tenant, user) is False
    await provisioner.apply(tenant)
    with pytest.raises(PermanentError):
        await provisioner.grant_user(tenant, user)


async def test_deleting_the_project_deletes_its_memberships(
    provisioner: OpenProjectProvisioner, api: aiohttp.ClientSession, make_tenant: Callable[..., TenantSpec],
) -> None:
    tenant = make_tenant("free")
    project_id = (await provisioner.apply(tenant)).settings["id"]
    await provisioner.grant_user(tenant, UserGrant(user_id="finn", role=UserRole.EDITOR, email="f@x.io"))
    await provisioner.delete(tenant)
    status, body = await call(api, "GET", "/api/v3/memberships")
    assert status == 200 and body["total"] == 0
    status, _ = await call(api, "GET", f"/api/v3/projects/{project_id}")
    assert status == 404


# -- the stand-in's contract for users and memberships --------------------------------------------------


@pytest.mark.parametrize(("body", "attributes"), [
    ({}, {"login", "email", "firstName", "lastName"}),
    ({"login": "x", "email": "not-an-email", "firstName": "X", "lastName": "Y"}, {"email"}),
    ({"login": "admin", "email": "a@b.io", "firstName": "X", "lastName": "Y"}, {"login"}),
    ({"login": "y", "email": "a@b.io", "firstName": 7, "lastName": "Y", "status": "locked"}, {"firstName", "status"}),
    ({"login": "z" * 257, "email": "c@b.io", "firstName": "X", "lastName": "Y"}, {"login"}),
])
async def test_invalid_users_are_property_constraint_violations(
    api: aiohttp.ClientSession, body: dict[str, Any], attributes: set[str],
) -> None:
    status, error = await call(api, "POST", "/api/v3/users", body)
    assert status == 422
    errors = error["_embedded"]["errors"] if "errors" in error.get("_embedded", {}) else [error]
    assert {e["_embedded"]["details"]["attribute"] for e in errors} == attributes
    assert all(e["errorIdentifier"] == ERRORS + "PropertyConstraintViolation" for e in errors)


async def test_memberships_need_a_project_a_principal_and_an_assignable_role_once(api: aiohttp.ClientSession) -> None:
    status, project = await call(api, "POST", "/api/v3/projects", {"name": "P", "identifier": "p-members"})
    assert status == 201
    status, user = await call(api, "POST", "/api/v3/users", {"login": "gus", "email": "g@x.io", "firstName": "G",
                                                           "lastName": "U"})
    assert status == 201
    links = {"project": {"href": f"/api/v3/projects/{project['id']}"},
             "principal": {"href": f"/api/v3/users/{user['id']}"}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**links, "project": {"href": "/api/v3/projects/999"}}, "project"),
        ({**links, "principal": {"href": "/api/v3/users/999"}}, "principal"),
        (links, "roles"),
        ({**links, "roles": [{"href": "/api/v3/roles/1"}]}, "roles"),  # Non member: built in, not assignable
    ]
    for case, attribute in cases:
        status, error = await call(api, "POST", "/api/v3/memberships", {"_links": case})
        assert status == 422 and error["_embedded"]["details"]["attribute"] == attribute, (case, error)
    good = {**links, "roles": [{"href": "/api/v3/roles/5"}]}
    status, membership = await call(api, "POST", "/api/v3/memberships", {"_links": good})
    assert status == 201 and membership["_type"] == "Membership"
    status, error = await call(api, "POST", "/api/v3/memberships", {"_links": good})
    assert status == 422 and error["message"] == "Principal has already been taken."
    status, _ = await call(api, "PATCH", f"/api/v3/memberships/{membership['id']}",
                           {"_links": {"roles": [{"href": "/api/v3/roles/3"}]}})
    assert status == 200
    assert await members(api, project["id"]) == [("gus", ["Project admin"])]
    assert (await call(api, "DELETE", f"/api/v3/memberships/{membership['id']}"))[0] == 204
    for method in ("GET", "PATCH", "DELETE"):
        status, error = await call(api, method, f"/api/v3/memberships/{membership['id']}",
                                   {"_links": {}} if method == "PATCH" else None)
        assert status == 404 and error["errorIdentifier"] == ERRORS + "NotFound"
    status, error = await call(api, "GET", '/api/v3/memberships?filters=[{"role":{"operator":"=","values":["1"]}}]')
    assert status == 400 and error["errorIdentifier"] == ERRORS + "InvalidQuery"
