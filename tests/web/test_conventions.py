"""API conventions: errors are RFC 9457 problem details (application/problem+json) that keep the service's
``code``; every 201 and 202 carries a ``Location`` header."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.web.conftest import ADMIN, SECRET, FakeReadiness, bearer, check_problem, token
from tests.web.memory_state import MemoryState
from web.auth import Authenticator
from web.compute import Reply, located
from web.errors import PROBLEM_JSON, ApiError, error_body, problem_of, title_of
from web.server import build_root_app

VIEWER = token(("tenant-viewer",), "acme", sub="acme-viewer")


# -- the problem document ----------------------------------------------------------------------------------


def test_an_error_body_is_a_problem_document_that_keeps_the_code_and_the_earlier_error_object() -> None:
    body = error_body("tenant-not-found", "tenant 'x' does not exist", {"tenant_id": "x"}, status=404,
                      instance="/api/v1/tenants/x")
    assert body == {
        "type": "about:blank", "title": "Not Found", "status": 404, "detail": "tenant 'x' does not exist",
        "instance": "/api/v1/tenants/x", "code": "tenant-not-found", "details": {"tenant_id": "x"},
        "error": {"code": "tenant-not-found", "message": "tenant 'x' does not exist", "details": {"tenant_id": "x"}},
    }
    check_problem(404, PROBLEM_JSON, body)


def test_a_500_names_its_logged_occurrence_as_instance() -> None:
    error_id = "0123456789abcdef0123456789abcdef"
    body = error_body("internal-error", "logged", {"error_id": error_id}, status=500, instance="/api/v1/x")
    assert body["instance"] == "urn:uuid:01234567-89ab-cdef-0123-456789abcdef"
    assert body["title"] == "Internal Server Error" and body["details"]["error_id"] == error_id
    assert error_body("internal-error", "logged", {"error_id": "?"}, status=500, instance="/x")["instance"] == "/x"


@pytest.mark.parametrize(("status", "title"), [(400, "Bad Request"), (410, "Gone"), (502, "Bad Gateway"),
                                               (499, "Error"), (599, "Server Error")])
def test_the_title_is_the_status_phrase(status: int, title: str) -> None:
    assert title_of(status) == title


def test_relayed_errors_are_read_in_both_shapes() -> None:
    problem = error_body("access-gone", "gone", {"state": "running"}, status=410)
    assert problem_of(problem) == ("access-gone", "gone", {"state": "running"})
    earlier = {"error": {"code": "access-gone", "message": "gone", "details": {"state": "running"}}}
    assert problem_of(earlier) == ("access-gone", "gone", {"state": "running"})
    assert problem_of(["not", "an", "error"]) is None and problem_of({"status": "ok"}) is None


def test_a_relayed_compute_error_keeps_its_code_and_is_served_as_a_problem() -> None:
    reply = Reply.error(ApiError(503, "owner-unavailable", "retry", headers={"Retry-After": "5"}))
    response = reply.response()
    assert response.status == 503 and response.content_type == PROBLEM_JSON
    with pytest.raises(ApiError) as raised:
        reply.raise_for_error(request_id="acme.1")
    assert raised.value.code == "owner-unavailable" and raised.value.details == {"request_id": "acme.1"}
    assert raised.value.headers == {"Retry-After": "5"}


@pytest.fixture
async def client(state: MemoryState) -> Any:
    app = build_root_app(state, state, Authenticator(hs256_secret=SECRET), FakeReadiness(), None)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def problem(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = await response.json(content_type=None)
    check_problem(response.status, response.content_type, body)
    return body


async def test_api_errors_are_problem_documents_naming_the_request(client: TestClient) -> None:
    response = await client.get("/api/v1/tenants/ghost?x=1", headers=bearer(ADMIN))
    body = await problem(response)
    assert (body["status"], body["title"], body["code"]) == (404, "Not Found", "tenant-not-found")
    assert body["instance"] == "/api/v1/tenants/ghost" and body["detail"] == "tenant 'ghost' does not exist"

    response = await client.get("/api/v1/tenants")
    body = await problem(response)
    assert (body["status"], body["code"]) == (401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")

    response = await client.post("/api/v1/provision", json={"tenant_id": "acme"}, headers=bearer(ADMIN))
    body = await problem(response)
    assert (body["status"], body["code"]) == (422, "validation-error") and body["details"]["errors"]

    response = await client.put("/api/v1/tenants/acme/quota", json={}, headers=bearer(VIEWER))
    assert (await problem(response))["code"] == "forbidden"


async def test_errors_outside_the_api_are_problem_documents_too(client: TestClient) -> None:
    body = await problem(await client.get("/nothing/here"))
    assert (body["status"], body["code"], body["instance"]) == (404, "not-found", "/nothing/here")
    response = await client.post("/health")
    assert (await problem(response))["code"] == "method-not-allowed" and response.headers["Allow"] == "GET"
    body = await problem(await client.get("/ui/events?access_token=nonsense"))
    assert body["code"] == "unauthorized"


async def test_a_path_too_long_to_echo_is_left_out_of_the_problem(client: TestClient) -> None:
    body = await problem(await client.get("/api/v1/tenants/" + "x" * 300, headers=bearer(ADMIN)))
    assert body["code"] == "tenant-not-found" and "instance" not in body


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The OpenAPI document the worker's web app serves, with the compute and scaling routes."""
    from tests.web.test_openapi_fuzz import ServedApp

    with ServedApp() as served, urllib.request.urlopen(f"{served.base_url}/api/v1/openapi.json",  # noqa: S310
                                                       timeout=30) as response:
        served_document: dict[str, Any] = json.loads(response.read())
    return served_document


def test_the_openapi_document_describes_every_error_as_a_problem(document: dict[str, Any]) -> None:
    errors = [(path, method, status, response) for path, item in document["paths"].items()
              for method, operation in item.items() for status, response in operation["responses"].items()
              if int(status) >= 400]
    assert len(errors) > 50
    for path, method, status, response in errors:
        assert set(response["content"]) == {PROBLEM_JSON}, (path, method, status)
        assert response["content"][PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    schema = document["components"]["schemas"]["ErrorBody"]
    assert {"type", "title", "status", "detail", "instance", "code", "details", "error"} == set(schema["properties"])


# -- Location --------------------------------------------------------------------------------------------


#: Every answer that creates or accepts something, and the test that checks its Location header. A new 201 or
#: 202 in the OpenAPI document fails ``test_every_201_and_202_has_a_location_test`` until it is added here.
LOCATION_TESTS: dict[tuple[str, str, int], str] = {
    ("post", "/provision", 202): "test_api.py::test_provision_sends_the_event_and_the_state_shows_the_tenant",
    ("put", "/tenants/{tenant_id}/quota", 202): "test_api.py::test_put_quota_sends_the_change",
    ("delete", "/tenants/{tenant_id}", 202): "test_api.py::test_delete_sends_the_deletion",
    ("delete", "/tenants/{tenant_id}/quarantine/{resource_id}", 202):
        "test_api.py::test_an_admin_releases_a_quarantined_workload",
    ("delete", "/tenants/{tenant_id}/quota/over-quota/{resource}", 202):
        "test_api.py::test_an_admin_lifts_an_over_quota_mark_and_it_is_audited_and_announced",
    ("post", "/compute/provision", 201):
        "test_compute.py::test_a_gpu_request_runs_on_the_cheapest_offer_and_returns_its_secrets_once",
    ("post", "/compute/provision", 202):
        "test_compute.py::test_a_slow_allocation_answers_202_and_its_access_is_claimed_once",
    ("delete", "/compute/provision/{request_id}", 202):
        "test_compute.py::test_a_termination_still_releasing_answers_202_with_the_requests_location",
    ("post", "/scaling/policies", 202):
        "test_scaling_api.py::test_a_created_policy_is_listed_read_replaced_and_deleted",
    ("put", "/scaling/policies/{policy_id}", 202):
        "test_scaling_api.py::test_a_created_policy_is_listed_read_replaced_and_deleted",
    ("delete", "/scaling/policies/{policy_id}", 202):
        "test_scaling_api.py::test_a_created_policy_is_listed_read_replaced_and_deleted",
}


def test_every_201_and_202_has_a_location_test(document: dict[str, Any]) -> None:
    documented = {(method, path, int(status)) for path, item in document["paths"].items()
                  for method, operation in item.items() for status in operation["responses"]
                  if int(status) in (201, 202)}
    assert documented == set(LOCATION_TESTS)
    for method, path, status in documented:
        header = document["paths"][path][method]["responses"][str(status)]["headers"]["Location"]
        assert header["required"] is True


def test_located_points_only_201_and_202_at_the_request() -> None:
    assert located(web.json_response({}, status=202), "acme.1").headers["Location"] == \
        "/api/v1/compute/provision/acme.1"
    assert located(web.json_response({}, status=201), "acme.1").headers["Location"] == \
        "/api/v1/compute/provision/acme.1"
    assert "Location" not in located(web.json_response({}, status=200), "acme.1").headers


async def test_a_dry_run_answers_200_without_a_location(client: TestClient) -> None:
    body = {"tenant_id": "beta", "name": "Beta", "tier": "free"}
    response = await client.post("/api/v1/provision?dry_run=true", json=body, headers=bearer(ADMIN))
    assert response.status == 200 and "Location" not in response.headers
