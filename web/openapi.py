"""The OpenAPI 3.1 document of /api/v1, generated from the operations and their pydantic models."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from pipeline.events.models import TENANT_ID_PATTERN
from web.auth import Access
from web.errors import PROBLEM_JSON
from web.models import ErrorBody
from web.operations import Operation

TITLE = "Tenant provisioning service API"
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
VERSION = "1.0.0"

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed JSON body (code malformed-json), invalid or unknown query parameter (code invalid-query), or "
    "no tenant_id where a platform-admin must name the tenant (code tenant-required), or a malformed "
    "Idempotency-Key header (code invalid-idempotency-key), or a cursor this API did not return (code "
    "invalid-cursor).",
    401: "Missing, expired, badly signed or otherwise unacceptable bearer token (WWW-Authenticate: Bearer).",
    403: "The token may not do this: another tenant, a viewer writing, or a quota change by a non-platform-admin.",
    404: "Unknown tenant (code tenant-not-found) or compute request (code compute-request-not-found).",
    409: "The tenant already exists (code tenant-exists), its id belongs to a tenant deleted without purge whose "
    "data is kept (code tenant-id-retained: delete it again with ?purge=true first), or the compute request "
    "is not in a state that allows this (codes access-not-ready, compute-request-terminated: a retry of a "
    "request that ended).",
    410: "The access details of a compute request were handed out already or expired unclaimed (code access-gone): "
    "they are never stored; terminate the request and request again.",
    422: "The body failed validation (code validation-error, details.errors lists each problem), the tenant "
    "cannot be planned (code plan-refused), or no compute offer satisfies the request (code no-feasible-offer, "
    "details.binding_constraint names the constraint that excludes everything), the tenant's quota does not "
    "admit the compute request (code quota-exceeded), or an Idempotency-Key or request_name already names a "
    "compute request with another body (code idempotency-key-reused).",
    502: "Every allocation attempt at the providers failed (code allocation-failed; details.attempts lists them).",
    500: "Unexpected error; details.error_id matches the server's log line. Nothing internal is shown.",
    503: "The worker is not ready (code not-ready), the token signing keys cannot be fetched (auth-unavailable), "
    "the command could not be submitted (command-not-submitted) or the worker owning the tenant did not answer "
    "(owner-unavailable); retry after Retry-After seconds.",
}

#: Every 201 and 202 says where the created resource, or the status of the accepted work, is.
LOCATION_HEADER: dict[str, Any] = {
    "description": "The created resource, or where to follow the accepted work (its status or its resource).",
    "required": True,
    "schema": {"type": "string", "format": "uri-reference"},
}

ACCESS_TEXT: dict[Access, str] = {
    Access.PUBLIC: "No token needed.",
    Access.READ: "Any role; a tenant-scoped token only on its own tenant.",
    Access.WRITE: "platform-admin, or tenant-admin on its own tenant; tenant-viewer is refused (403).",
    Access.PLATFORM: "platform-admin only.",
}


def _schemas(ops: list[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in ops:
        if op.body is not None:
            inputs.append((op.body, "validation"))
        inputs.extend((model, "serialization") for model, _ in op.responses.values() if model is not None)
    inputs.append((ErrorBody, "serialization"))
    unique = list(dict.fromkeys(inputs))
    refs, top = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    schemas = dict(top.get("$defs", {}))
    _require_discriminators(schemas)
    return dict(refs), schemas


def _require_discriminators(schemas: dict[str, Any]) -> None:
    """Mark a discriminator's property required in every variant it maps to (OpenAPI requires it, and the
    server cannot pick a variant without it, even when the variant's model gives the field a default)."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            discriminator = node.get("discriminator")
            if isinstance(discriminator, dict):
                name = discriminator["propertyName"]
                for ref in discriminator.get("mapping", {}).values():
                    variant = schemas[ref.rsplit("/", 1)[-1]]
                    if name not in variant.setdefault("required", []):
                        variant["required"].append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schemas)


def _json_content(schema: dict[str, Any], example: Any = None, media_type: str = "application/json") -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {media_type: media}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        params.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": prop.get("description", ""),
                "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
            }
        )
    return params


def openapi_document(operations: Iterable[Operation], server_url: str = "/api/v1") -> dict[str, Any]:
    ops = list(operations)
    refs, schemas = _schemas(ops)
    error_ref = refs[(ErrorBody, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        parameters: list[dict[str, Any]] = []
        if op.tenant_in_path:
            parameters.append(
                {
                    "name": "tenant_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": TENANT_ID_PATTERN, "maxLength": 40},
                    "example": "acme",
                }
            )
        for name in _PATH_PARAMETER.findall(op.path):
            if name != "tenant_id":
                parameters.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
        if op.query is not None:
            parameters.extend(_query_parameters(op.query))
        parameters.extend(op.headers)
        responses: dict[str, Any] = {}
        for status, (model, description) in sorted(op.responses.items()):
            schema = refs[(model, "serialization")] if model is not None else {"type": "object"}
            responses[str(status)] = {"description": description, "content": _json_content(schema)}
            if status in (201, 202):
                responses[str(status)]["headers"] = {"Location": LOCATION_HEADER}
        for status in sorted(op.errors):
            responses[str(status)] = {"description": ERROR_DESCRIPTIONS[status],
                                      "content": _json_content(error_ref, media_type=PROBLEM_JSON)}
        operation: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "description": " ".join(filter(None, [op.description, "Access: " + ACCESS_TEXT[op.access]])),
            "x-access": op.access.value,
            "parameters": parameters,
            "responses": responses,
        }
        if op.action:
            operation["x-audit-action"] = op.action
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": _json_content(refs[(op.body, "validation")], op.example),
            }
        if op.access is Access.PUBLIC:
            operation["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Tenants, their provisioning status and quotas. Every operation except this document "
            'needs "Authorization: Bearer <JWT>". Errors are RFC 9457 problem details (application/problem+json: '
            "type, title, status, detail, instance) with the service's stable code and details members. A 201 or "
            "202 carries a Location header: the created resource or where to follow the accepted work.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Claims sub, tenant_id, roles (platform-admin / tenant-admin / tenant-viewer) "
                    "and exp; RS256 in production, HS256 in development.",
                }
            },
        },
    }
