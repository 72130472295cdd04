"""Compute provisioning: cheapest feasible offer across partner clouds, failover, access and lifecycle.

Modules (see ``docs/compute.md``):

* :mod:`pipeline.compute.request` — the validated request model.
* :mod:`pipeline.compute.catalog` — offers from SkyPilot v8 CSV catalogs and engine quotes, discounts.
* :mod:`pipeline.compute.optimizer` — the choice: ranked candidates plus a reason for every exclusion.
* :mod:`pipeline.compute.backend` — the protocol every allocation backend implements.
* :mod:`pipeline.compute.engine_client` — async client of the derivatives engine.
* :mod:`pipeline.compute.allocation` — allocation with failover, no leaked allocations.
* :mod:`pipeline.compute.access` — SSH key pair, Jupyter and monitoring URLs, secret masking.
* :mod:`pipeline.compute.quota` — quota admission: every resource of the tenant's live requests.
* :mod:`pipeline.compute.lifecycle` — states, stored record, auto-termination, capacity view.
* :mod:`pipeline.compute.kubernetes_provider` — the in-house Kubernetes cluster as a provider.
* :mod:`pipeline.compute.service` — the orchestration the agents and the REST routes call.
"""
