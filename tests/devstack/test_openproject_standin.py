"""The OpenProject STAND-IN answers like OpenProject's API v3 for projects (shapes, codes, errors, auth)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.integration

ERRORS = "urn:openproject-org:api:v3:errors:"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


@pytest.fixture
async def api(openproject_service: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    headers = _basic("apikey", openproject_service["OPENPROJECT_API_KEY"])
    async with aiohttp.ClientSession(base_url=openproject_service["OPENPROJECT_URL"], headers=headers) as session:
        yield session


def _identifier() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


async def _create(api: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    async with api.post("/api/v3/projects", json=body) as response:
        assert response.status == 201, await response.text()
        assert response.content_type == "application/hal+json"
        created: dict[str, Any] = await response.json()
        return created


async def test_root_needs_the_api_key(openproject_service: dict[str, str]) -> None:
    base = openproject_service["OPENPROJECT_URL"]
    async with aiohttp.ClientSession(base_url=base) as anonymous:
        async with anonymous.get("/api/v3") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            body = await response.json(content_type=None)
            assert body["_type"] == "Error"
            assert body["errorIdentifier"] == ERRORS + "Unauthenticated"
        wrong = _basic("apikey", "not-the-key")
        async with anonymous.get("/api/v3/projects", headers=wrong) as response:
            assert response.status == 401
        user = _basic("admin", openproject_service["OPENPROJECT_API_KEY"])
        async with anonymous.get("/api/v3/projects", headers=user) as response:
            assert response.status == 401
        key = _basic("apikey", openproject_service["OPENPROJECT_API_KEY"])
        async with anonymous.get("/api/v3", headers=key) as response:
            assert response.status == 200
            assert (await response.json(content_type=None))["_type"] == "Root"


async def test_project_lifecycle(api: aiohttp.ClientSession) -> None:
    identifier = _identifier()
    created = await _create(
        api, name="Tenant Project", identifier=identifier, description={"raw": "Provisioned **tenant**"}
    )
    assert created["_type"] == "Project"
    assert created["identifier"] == identifier
    assert created["name"] == "Tenant Project"
    assert created["active"] is True
    assert created["public"] is False
    assert created["description"]["format"] == "markdown"
    assert created["description"]["raw"] == "Provisioned **tenant**"
    assert "Provisioned" in created["description"]["html"]
    project_id = created["id"]
    assert isinstance(project_id, int)
    assert created["_links"]["self"]["href"] == f"/api/v3/projects/{project_id}"

    async with api.get(f"/api/v3/projects/{project_id}") as response:
        assert response.status == 200
        assert (await response.json())["identifier"] == identifier
    async with api.get(f"/api/v3/projects/{identifier}") as response:
        assert response.status == 200
        assert (await response.json())["id"] == project_id

    patch = {"name": "Renamed", "public": True, "description": {"raw": "new"}}
    async with api.patch(f"/api/v3/projects/{project_id}", json=patch) as response:
        assert response.status == 200
        updated = await response.json()
    assert updated["name"] == "Renamed"
    assert updated["public"] is True
    assert updated["description"]["raw"] == "new"
    assert updated["identifier"] == identifier

    async with api.delete(f"/api/v3/projects/{project_id}") as response:
        assert response.status == 204
    async with api.get(f"/api/v3/projects/{project_id}") as response:
        assert response.status == 404
        body = await response.json(content_type=None)
        assert body["_type"] == "Error"
        assert body["errorIdentifier"] == ERRORS + "NotFound"
    async with api.delete(f"/api/v3/projects/{project_id}") as response:
        assert response.status == 404


async def test_taken_identifier_is_a_property_constraint_violation(api: aiohttp.ClientSession) -> None:
    identifier = _identifier()
    await _create(api, name="First", identifier=identifier)
    async with api.post("/api/v3/projects", json={"name": "Second", "identifier": identifier}) as response:
        assert response.status == 422
        body = await response.json(content_type=None)
    assert body["_type"] == "Error"
    assert body["errorIdentifier"] == ERRORS + "PropertyConstraintViolation"
    assert body["_embedded"]["details"]["attribute"] == "identifier"
    assert "taken" in body["message"]


@pytest.mark.parametrize(
    ("body", "attribute"),
    [
        ({"identifier": "no-name-given"}, "name"),
        ({"name": "Bad", "identifier": "Upper-Case"}, "identifier"),
        ({"name": "Bad", "identifier": "semi;colon"}, "identifier"),
        ({"name": "Bad", "identifier": "12345"}, "identifier"),
        ({"name": "Bad", "identifier": "x" * 101}, "identifier"),
    ],
)
async def test_invalid_projects_are_refused(api: aiohttp.ClientSession, body: dict[str, Any], attribute: str) -> None:
    async with api.post("/api/v3/projects", json=body) as response:
        assert response.status == 422
        error = await response.json(content_type=None)
    assert error["errorIdentifier"] == ERRORS + "PropertyConstraintViolation"
    assert error["_embedded"]["details"]["attribute"] == attribute


async def test_bodies_must_be_json_objects(api: aiohttp.ClientSession) -> None:
    async with api.post("/api/v3/projects", data=b"[1, 2]", headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        assert (await response.json(content_type=None))["errorIdentifier"] == ERRORS + "InvalidRequestBody"
    async with api.post("/api/v3/projects", data=b"name=x", headers={"Content-Type": "text/plain"}) as response:
        assert response.status == 415
        assert (await response.json(content_type=None))["errorIdentifier"] == ERRORS + "TypeNotSupported"


async def test_collection_shape_and_filters(api: aiohttp.ClientSession) -> None:
    wanted = _identifier()
    await _create(api, name="Wanted", identifier=wanted)
    await _create(api, name="Other", identifier=_identifier())
    filters = json.dumps([{"name_and_identifier": {"operator": "=", "values": [wanted]}}])
    async with api.get("/api/v3/projects", params={"filters": filters}) as response:
        assert response.status == 200
        collection = await response.json()
    assert collection["_type"] == "Collection"
    assert collection["total"] == 1
    assert collection["count"] == 1
    assert [p["identifier"] for p in collection["_embedded"]["elements"]] == [wanted]
    assert collection["_links"]["self"]["href"].startswith("/api/v3/projects?")

    async with api.get("/api/v3/projects", params={"pageSize": "1"}) as response:
        page = await response.json()
    assert page["count"] == 1
    assert page["total"] >= 2
    assert page["pageSize"] == 1

    unknown = json.dumps([{"identifier": {"operator": "=", "values": [wanted]}}])
    async with api.get("/api/v3/projects", params={"filters": unknown}) as response:
        assert response.status == 400
        assert (await response.json(content_type=None))["errorIdentifier"] == ERRORS + "InvalidQuery"


async def test_identifier_is_derived_from_the_name_when_omitted(api: aiohttp.ClientSession) -> None:
    name = f"Derived {uuid.uuid4().hex[:6]}"
    created = await _create(api, name=name)
    assert created["identifier"] == name.lower().replace(" ", "-")
