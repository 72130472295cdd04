"""The /api/v1/compute routes: provision, list, quote, status, terminate, one-time access retrieval, capacity.

Retries: a POST with an ``Idempotency-Key`` header (or a ``request_name`` in the body) gets a request id derived
from the tenant and the key (``pipeline/compute/request_ids.py``), so a retry reaches the same owner worker and
the same record; the record (durable in the changelog table) is the idempotency record and stores the canonical
hash of the body it was created with. Same hash: the answer is rebuilt from the record, nothing is allocated
again; another hash: 422 ``idempotency-key-reused``. A quote runs the same decision and stores nothing.

Everything about a tenant's compute requests happens on the worker owning the tenant's partition: its records
(table ``compute-records``), its quota, its allocations in flight and its access details not yet handed out
live there. The worker that receives a request authenticates, authorizes and audits it (the API middleware),
then runs it itself when it owns the tenant, else forwards it to the owner's internal endpoint
(``/internal/v1/compute/...``, guarded by PEER_SECRET) and relays the answer. The tenant of
``/compute/provision/{request_id}`` is the part of the id before the ``.`` (``acme.c1f0...``).

Secret delivery (docs/compute.md, "Access details over REST"): ``POST /compute/provision`` waits up to
COMPUTE_PROVISION_WAIT_SECONDS (or ``?wait_seconds=``) for the allocation. Running by then, the 201 carries
the access details with the SSH private key and the Jupyter token, once. Otherwise 202: the allocation goes
on, and when it runs its access details wait in the owner worker's memory (never stored, never sent anywhere
else) for ONE ``POST /compute/provision/{request_id}/access`` within COMPUTE_ACCESS_CLAIM_TTL_SECONDS; after
that, or after a restart of that worker, they are gone (410) and the requester terminates and requests again.

The package, one idea a module (each imports only those above it):

- ``models``: the bodies, queries and limits (and ``status_url``);
- ``idempotency``: the Idempotency-Key header, the request id of a POST, what a retry is;
- ``paging``: the listing's order and cursor;
- ``owner``: the :class:`Reply` that crosses a worker hop and :class:`OwnerRouter` (forwarding to the owner);
- ``local``: :class:`LocalCompute`, what the owner worker does;
- ``api``: :class:`ComputeApi`, the public handlers;
- ``internal``: the owner's internal endpoints;
- ``operations``: the OpenAPI operations and the worker wiring (``worker_operations``).
"""

from web.compute.api import ComputeApi, located
from web.compute.internal import internal_routes
from web.compute.local import LocalCompute
from web.compute.operations import operations, worker_operations
from web.compute.owner import OwnerRouter, Reply

# the names other modules use (the worker, tests, bench); the rest is imported from its own module
__all__ = ["ComputeApi", "LocalCompute", "OwnerRouter", "Reply", "internal_routes", "located", "operations",
           "worker_operations"]
