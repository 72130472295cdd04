"""The OpenAPI document says exactly what the server does: same routes, same methods, valid examples, and the
server's real responses validate against the documented schemas."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from pipeline.events.models import ResourceMetrics
from tests.web.conftest import ADMIN, SECRET, bearer, tenant_event
from tests.web.memory_state import MemoryState
from web.api import OPERATIONS_KEY, build_api
from web.auth import Authenticator
from web.openapi import openapi_document

DOC_URI = "urn:provisioning:openapi"


@pytest.fixture
async def document(client: TestClient) -> dict[str, Any]:
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document))
    rooted = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_absolute(schema)}
    return jsonschema.Draft202012Validator(rooted, registry=registry)


def _absolute(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema and schema["$ref"].startswith("#"):
        return {**schema, "$ref": DOC_URI + schema["$ref"]}
    return schema


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    operation = document["paths"][path][method]
    assert str(status) in operation["responses"], f"{method.upper()} {path} does not document {status}"
    media = "application/problem+json" if status >= 400 else "application/json"  # errors are RFC 9457 problems
    schema: dict[str, Any] = operation["responses"][str(status)]["content"][media]["schema"]
    return schema


def test_every_route_is_documented_with_its_methods_and_nothing_else():
    state = MemoryState()
    api = build_api(state, state, Authenticator(hs256_secret=SECRET), None)
    served: set[tuple[str, str]] = set()
    for route in api.router.routes():
        resource = route.resource
        assert resource is not None
        served.add((resource.canonical, route.method.lower()))
    document = openapi_document(api[OPERATIONS_KEY].values())
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert served == documented
    assert ("/provision", "post") in served and ("/tenants/{tenant_id}/quota", "put") in served


async def test_the_served_document_is_openapi_31_for_the_mount_point(document: dict[str, Any]):
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/api/v1"}]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            secured = operation.get("security", document["security"]) != []
            assert secured == (path != "/openapi.json"), (method, path)
            if secured:
                assert {"401", "403", "500"} <= set(operation["responses"])
            if "{tenant_id}" in path:
                assert "404" in operation["responses"]
                assert any(p["name"] == "tenant_id" and p["in"] == "path" for p in operation["parameters"])


async def test_the_document_schemas_are_valid_json_schema(document: dict[str, Any]):
    assert document["components"]["schemas"]
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


async def test_request_examples_validate_against_their_schemas(document: dict[str, Any]):
    examples = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is None:
                continue
            media = body["content"]["application/json"]
            assert "example" in media, f"{method.upper()} {path} has no request example"
            validator(document, media["schema"]).validate(media["example"])
            examples += 1
    assert examples == 2


async def test_invalid_requests_fail_the_documented_schema_too(document: dict[str, Any]):
    schema = document["paths"]["/provision"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    with pytest.raises(jsonschema.ValidationError):
        validator(document, schema).validate({"tenant_id": "acme", "name": "Acme", "tier": "platinum"})
    with pytest.raises(jsonschema.ValidationError):
        validator(document, schema).validate({"tenant_id": "acme", "name": "Acme", "tier": "free", "extra": 1})


async def test_the_documented_examples_are_accepted_by_the_server(client: TestClient, document: dict[str, Any]):
    provision = document["paths"]["/provision"]["post"]["requestBody"]["content"]["application/json"]["example"]
    response = await client.post("/api/v1/provision", json=provision, headers=bearer(ADMIN))
    assert response.status == 202
    quota = document["paths"]["/tenants/{tenant_id}/quota"]["put"]["requestBody"]["content"]["application/json"]
    response = await client.put(f"/api/v1/tenants/{provision['tenant_id']}/quota", json=quota["example"],
                                headers=bearer(ADMIN))
    assert response.status == 202


async def test_documented_query_parameters_are_the_ones_the_server_reads(document: dict[str, Any]):
    def params(path: str, method: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in document["paths"][path][method]["parameters"] if p["in"] == "query"}

    assert set(params("/provision", "post")) == {"dry_run"}
    assert set(params("/tenants/{tenant_id}", "delete")) == {"purge"}
    listing = params("/tenants", "get")
    assert set(listing) == {"offset", "limit"}
    assert listing["limit"]["schema"]["maximum"] == 200 and listing["offset"]["schema"]["minimum"] == 0


async def test_real_responses_validate_against_the_documented_schemas(
    client: TestClient, state: MemoryState, document: dict[str, Any]
):
    await state.submit_tenant(tenant_event("acme"))
    state.record_usage(ResourceMetrics(event_id="m1", tenant_id="acme", occurred_at=tenant_event("x").occurred_at,
                                       workload="api", cpu_cores=1, memory_gib=2, gpus=0))
    admin = bearer(ADMIN)
    checks: list[tuple[str, str, str, Any, int]] = [
        ("get", "/tenants", "/api/v1/tenants?limit=5", None, 200),
        ("get", "/tenants/{tenant_id}", "/api/v1/tenants/acme", None, 200),
        ("get", "/tenants/{tenant_id}/quota", "/api/v1/tenants/acme/quota", None, 200),
        ("get", "/tenants/{tenant_id}/provisioning-status", "/api/v1/tenants/acme/provisioning-status", None, 200),
        ("put", "/tenants/{tenant_id}/quota", "/api/v1/tenants/acme/quota",
         {"cpu_cores": 1, "memory_gib": 1, "gpus": 0, "storage_gib": 1}, 202),
        ("post", "/provision", "/api/v1/provision?dry_run=true", {"tenant_id": "b", "name": "B", "tier": "free"}, 200),
        ("post", "/provision", "/api/v1/provision", {"tenant_id": "b", "name": "B", "tier": "free"}, 202),
        ("post", "/provision", "/api/v1/provision", {"tenant_id": "b", "name": "B", "tier": "free"}, 409),
        ("post", "/provision", "/api/v1/provision", {"tenant_id": "c"}, 422),
        ("get", "/tenants", "/api/v1/tenants?limit=999", None, 400),
        ("get", "/tenants/{tenant_id}", "/api/v1/tenants/ghost", None, 404),
        ("delete", "/tenants/{tenant_id}", "/api/v1/tenants/acme?purge=true", None, 202),
    ]
    for method, template, url, body, status in checks:
        response = await client.request(method.upper(), url, json=body, headers=admin)
        assert response.status == status, (method, url, await response.text())
        validator(document, response_schema(document, template, method, status)).validate(await response.json())
    unauthorized = await client.get("/api/v1/tenants")
    validator(document, response_schema(document, "/tenants", "get", 401)).validate(await unauthorized.json())


def test_the_document_lists_only_json_routes_it_serves():
    # The operations table is the one source: a handler registered without an operation would be missed
    # by the document, so build_api registers routes only from the table.
    state = MemoryState()
    api = build_api(state, state, Authenticator(hs256_secret=SECRET), None)
    names = {route.name for route in api.router.routes()}
    assert names == set(api[OPERATIONS_KEY])
    assert isinstance(api, web.Application)
