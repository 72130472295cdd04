"""The compute operations of /api/v1 (routes, OpenAPI description, authorization, audit) and their wiring
into a worker."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.compute.lifecycle import CapacityView
from pipeline.compute.request_ids import IDEMPOTENCY_KEY_PATTERN, MAX_IDEMPOTENCY_KEY_LENGTH
from pipeline.compute.runtime import ComputeRuntime
from web.api import Operation
from web.auth import Access
from web.compute.api import ComputeApi
from web.compute.internal import internal_routes
from web.compute.local import LocalCompute, TenantLookup
from web.compute.models import (
    IDEMPOTENCY_HEADER,
    CapacityQuery,
    ComputeProvisionRequest,
    ComputeProvisionResponse,
    ComputeQuote,
    ComputeRequestList,
    ComputeStatusResponse,
    ListQuery,
    ProvisionWaitQuery,
    QuoteQuery,
    RevealedAccess,
)
from web.compute.owner import OwnerRouter
from web.peer_client import PeerClient
from web.peers import peer_secret

PROVISION_EXAMPLE = {
    "tenant_id": "acme",
    "resources": {"gpu": {"type": "H100", "count": 4}, "vcpus": 32, "memory_gib": 128},
    "duration_hours": 6,
    "purpose": "training",
    "spot_allowed": False,
}


_AUTH_ERRORS = (401, 403, 503)

IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Makes the POST safe to retry: the same key with the same body answers with the same request "
    "instead of allocating again (for the tenant; keys of different tenants never meet). 1 to "
    f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters; a UUID will do.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
               "pattern": IDEMPOTENCY_KEY_PATTERN},
    "example": "5f0c6f4e-8d1e-4c55-9a59-3d1b2f1f7a10",
}


def operations(api: ComputeApi) -> list[Operation]:
    """The compute operations (mounted with the rest of /api/v1: same auth, tenant isolation, audit, OpenAPI)."""
    return [
        Operation(
            "POST", "/compute/provision", "compute_provision",
            "Provision compute: the cheapest feasible offer, allocated with failover", api.provision, Access.WRITE,
            {201: (ComputeProvisionResponse, "Running: the access details (SSH private key, Jupyter token) are in "
                   "this response, once; they are not stored."),
             202: (ComputeProvisionResponse, "Reserved (start_at later) or still allocating: poll status_url, "
                   "then claim the access details once at access_url.")},
            errors=(400, *_AUTH_ERRORS, 404, 409, 422, 502, 500), action="compute-provision",
            body=ComputeProvisionRequest, query=ProvisionWaitQuery, example=PROVISION_EXAMPLE, tenant_in_body=True,
            headers=(IDEMPOTENCY_PARAMETER,),
            description="Chooses the cheapest feasible offer for the whole duration across the derivatives engine, "
            "the price catalogs and the in-house Kubernetes cluster (tenant discounts applied; the tenant's GPU "
            "quota and budget respected), then allocates it, failing over to the next candidates. 422 "
            "quota-exceeded: the tenant's live requests plus this one would exceed its quota of GPUs, vCPUs, memory "
            "or storage (or the tenant is marked over quota); nothing is stored. 422 no-feasible-offer names the "
            "constraint that excludes every offer; 502 allocation-failed lists the attempts. A compute-status event "
            "is announced on provisioning-events for every state change. Retrying safely: send an Idempotency-Key "
            "header (or a request_name in the body); the request id is derived from it and the tenant, so a retry "
            "with the same key and body answers with the same request (waiting for it like the first POST; header "
            "Idempotent-Replayed: true) and allocates nothing more; the access details are still handed out once. "
            "The same key with another body: 422 idempotency-key-reused; with a terminated request: 409 "
            "compute-request-terminated.",
        ),
        Operation(
            "GET", "/compute/provision", "compute_list",
            "A tenant's compute requests, newest first, a page at a time", api.listing, Access.READ,
            {200: (ComputeRequestList, "One page; next_cursor fetches the next.")},
            errors=(400, *_AUTH_ERRORS, 404, 500), query=ListQuery,
        ),
        Operation(
            "POST", "/compute/quote", "compute_quote",
            "Quote a compute request: the ranked feasible offers and why the others are excluded; allocates nothing",
            api.quote, Access.READ,
            {200: (ComputeQuote, "What provision would choose now, with prices and total cost.")},
            errors=(400, *_AUTH_ERRORS, 404, 422, 500), action="compute-quote", body=ComputeProvisionRequest,
            query=QuoteQuery, example=PROVISION_EXAMPLE, tenant_in_body=True,
            description="The same body as POST /compute/provision and the same decision (current offers, the "
            "tenant's discounts, GPU cap, budget and usage), without storing a request or allocating anything: "
            "a dry run. would_provision is false when nothing is feasible (binding_constraint says why) or when the "
            "tenant's quota would refuse it (quota_refusal).",
        ),
        Operation(
            "GET", "/compute/provision/{request_id}", "compute_status",
            "A compute request: state, chosen offer, candidates and exclusions, attempts", api.status, Access.READ,
            {200: (ComputeStatusResponse, "The request's record (access details masked).")},
            errors=(*_AUTH_ERRORS, 404, 500),
        ),
        Operation(
            "DELETE", "/compute/provision/{request_id}", "compute_terminate",
            "Terminate a compute request and release its capacity", api.terminate, Access.WRITE,
            {200: (ComputeStatusResponse, "Terminated (capacity released); repeating it changes nothing."),
             202: (ComputeStatusResponse, "The release failed and is retried automatically (state terminating).")},
            errors=(*_AUTH_ERRORS, 404, 500), action="compute-terminate",
        ),
        Operation(
            "POST", "/compute/provision/{request_id}/access", "compute_access",
            "Claim the access details of a request that ran after its POST answered (once)", api.claim,
            Access.WRITE,
            {200: (RevealedAccess, "The access details with their secrets, handed out once and forgotten.")},
            errors=(*_AUTH_ERRORS, 404, 409, 410, 500), action="compute-access-claim",
            description="Only for requests whose POST answered 202 (and for compute-request-events): the "
            "details wait in the memory of the worker that owns the tenant for COMPUTE_ACCESS_CLAIM_TTL_SECONDS.",
        ),
        Operation(
            "GET", "/compute/capacity", "compute_capacity",
            "Capacity by provider, region and resource type, and the tenant's remaining GPU quota and budget",
            api.capacity, Access.READ, {200: (CapacityView, "Pools' capacity minus the platform's allocations.")},
            errors=(400, *_AUTH_ERRORS, 404, 500), query=CapacityQuery,
        ),
    ]


def worker_operations(app: Any, runtime: ComputeRuntime, records_topic: Any, tenants: TenantLookup,
                      web_app: web.Application, peer_client: PeerClient) -> list[Operation]:
    """The routes, backed by the worker's compute runtime (``app`` is the Faust app, for owner lookups). Also
    adds the owner's internal endpoints to the worker's root web application ``web_app`` (being initialised)."""
    settings = app.settings
    token = peer_secret(settings)
    router = OwnerRouter(app, token, records_topic, peer_client)
    local = LocalCompute(runtime, tenants, router.holding_from_peers)
    web_app.router.add_routes(internal_routes(local, token))
    return operations(ComputeApi(local, router, settings.compute_provision_wait_seconds))
