"""The compute operations on the worker that owns the tenant's records: provision (with its retries),
quote, listing, status, terminate, the one-time access claim and capacity, each answered as a :class:`Reply`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.compute.access import AccessDetails
from pipeline.compute.lifecycle import CapacityView, ComputeRecord, ComputeState
from pipeline.compute.optimizer import Decision, NoFeasibleOffer
from pipeline.compute.quota import ComputeQuotaRefused, QuotaRefusal
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import tenant_of
from pipeline.compute.runtime import ComputeRuntime, Provisioned
from pipeline.compute.service import UnknownRequest
from pipeline.tenants.models import TenantRecord, TenantState
from web.api import tenant_not_found
from web.compute.idempotency import key_reused, same_request
from web.compute.models import (
    REPLAYED_HEADER,
    ComputeProvisionResponse,
    ComputeQuote,
    ComputeStatusResponse,
    ListQuery,
    status_url,
)
from web.compute.owner import Reply
from web.compute.paging import page_of
from web.errors import ApiError

logger = logging.getLogger(__name__)


TenantLookup = Callable[[str], TenantRecord | None]
ClientGone = Callable[[], bool]
PeersHolding = Callable[[], Awaitable[list[ComputeRecord]]]


async def _reply(call: Awaitable[Reply]) -> Reply:
    try:
        return await call
    except ApiError as exc:
        return Reply.error(exc)


def request_not_found(request_id: str) -> ApiError:
    shown = request_id[:120]
    return ApiError(404, "compute-request-not-found", f"no compute request {shown!r}", {"request_id": shown})


def infeasible(request_id: str, decision: Decision) -> ApiError:
    return ApiError(
        422, "no-feasible-offer", decision.message or "no offer satisfies the request",
        {
            "request_id": request_id,
            "status_url": status_url(request_id),
            "binding_constraint": decision.binding_constraint.value if decision.binding_constraint else None,
            "exclusion_details": {k.value: v for k, v in decision.exclusion_details.items()},
            "excluded_counts": decision.exclusion_counts(),
            "offers_considered": decision.offers_considered,
        },
    )


def over_quota(refusal: QuotaRefusal) -> ApiError:
    """The 422 of a request the tenant's quota does not admit, or the 409 of a tenant with a quarantined
    workload (nothing was stored or allocated)."""
    if refusal.code == "quarantined":
        return ApiError(409, "tenant-quarantined", refusal.message, {"reason": refusal.code, **refusal.details()})
    return ApiError(422, "quota-exceeded", refusal.message, {"reason": refusal.code, **refusal.details()})


def provision_body(record: ComputeRecord, access: AccessDetails | None, message: str) -> dict[str, Any]:
    """The POST answer; with ``access`` its secrets are in the returned dict (never log it)."""
    offer = record.offer
    body = ComputeProvisionResponse(
        request_id=record.request_id,
        tenant_id=record.tenant_id,
        state=record.state,
        status_url=status_url(record.request_id),
        access_url=f"{status_url(record.request_id)}/access",
        offer_id=offer.offer_id if offer else None,
        provider=offer.provider if offer else None,
        region=offer.region if offer else None,
        instance_type=offer.instance_type if offer else None,
        price_per_hour=record.price_per_hour,
        running_since=record.running_since,
        ends_at=record.ends_at,
        attempts=len(record.attempts),
        reservation=record.reservation,
        message=message,
    ).model_dump(mode="json")
    if access is not None:
        body["access"] = access.reveal()
    return body


# -- what the owner worker does --------------------------------------------------------------------------


class LocalCompute:
    """The compute operations on the worker that owns the tenant (or the only one, in tests)."""

    def __init__(
        self, runtime: ComputeRuntime, tenant: TenantLookup, peers_holding: PeersHolding | None = None
    ) -> None:
        self.runtime = runtime
        self.tenant = tenant
        self.peers_holding = peers_holding

    def _live_tenant(self, tenant_id: str) -> None:
        record = self.tenant(tenant_id)
        if record is None or record.state is TenantState.DELETED:
            raise tenant_not_found(tenant_id)

    def _record(self, request_id: str) -> ComputeRecord:
        try:
            return self.runtime.get(request_id)
        except UnknownRequest:
            raise request_not_found(request_id) from None

    async def provision(self, request_id: str, request: ComputeRequest, wait_s: float | None,
                        client_gone: ClientGone | None = None) -> Reply:
        """``client_gone``: whether the requester stopped waiting (its connection closed), checked before access
        details are put in the answer; then they go back to the vault for a retry or ``POST .../access``."""
        return await _reply(self._provision(request_id, request, wait_s, client_gone))

    def _keep_for_later(self, request_id: str, outcome: Provisioned, client_gone: ClientGone | None) -> Provisioned:
        """The outcome to answer with: without the access details when nobody is left to receive them (a client
        that timed out, about to retry with its Idempotency-Key), which wait in the vault instead of being lost."""
        if outcome.access is None or client_gone is None or not client_gone():
            return outcome
        self.runtime.vault.deposit(request_id, outcome.access)
        logger.info("compute request %s: the requester left before its access details; kept for a claim", request_id)
        return Provisioned(outcome.record, None, outcome.finished)

    async def _provision(self, request_id: str, request: ComputeRequest, wait_s: float | None,
                         client_gone: ClientGone | None = None) -> Reply:
        if tenant_of(request_id) != request.tenant_id:
            raise ApiError(400, "bad-request-id", "the request id does not belong to the request's tenant")
        self._live_tenant(request.tenant_id)
        if self.runtime.store.get(request_id) is not None:  # a retry (key, name, or a retried forward)
            return await self._rejoin(request_id, request, wait_s, client_gone)
        try:
            outcome = await self.runtime.provision(request_id, request, wait_s)
        except NoFeasibleOffer as exc:
            raise infeasible(request_id, exc.decision) from None
        except ComputeQuotaRefused as exc:
            raise over_quota(exc.refusal) from None
        except ValueError:
            # submitted meanwhile by a concurrent retry (with COMPUTE_QUOTE_ON_REQUEST the engine's quote is awaited
            # between the check and the store; without it, nothing is, and this is only a safety net): never
            # allocate twice
            if self.runtime.store.get(request_id) is None:
                raise
            return await self._rejoin(request_id, request, wait_s, client_gone)
        return self._answer(request_id, self._keep_for_later(request_id, outcome, client_gone))

    async def _rejoin(self, request_id: str, request: ComputeRequest, wait_s: float | None,
                      client_gone: ClientGone | None = None) -> Reply:
        """A POST whose request id exists: the same body is a retry, answered like the first POST from the
        record as it is now (waiting for an allocation in flight); another body reuses a key (422)."""
        if not same_request(self.runtime.get(request_id), request):
            raise key_reused(request_id)
        try:
            outcome = self._keep_for_later(request_id, await self.runtime.rejoin(request_id, wait_s), client_gone)
            reply = self._answer(request_id, outcome, replay=True)
        except ApiError as exc:
            exc.headers = {**exc.headers, REPLAYED_HEADER: "true"}
            raise
        reply.headers[REPLAYED_HEADER] = "true"
        return reply

    def _answer(self, request_id: str, outcome: Provisioned, replay: bool = False) -> Reply:
        """The answer to a POST from the request's record (and the access details, if they came now)."""
        record = outcome.record
        if not outcome.finished:
            message = (
                f"reserved for {record.request.start_at.isoformat()}" if record.state is ComputeState.REQUESTED
                and record.request.start_at is not None else "allocation in progress"
            )
            return Reply(202, provision_body(
                record, None, f"{message}; poll status_url, then claim the access details ONCE at access_url "
                "(they are not stored)",
            ))
        if record.state is ComputeState.RUNNING:
            message = "running; these access details are shown once and not stored"
            if outcome.access is None:
                message = "running; the access details were already claimed"
                if replay:
                    message += " (by an earlier answer to this request, or at access_url); they exist once"
            return Reply(201, provision_body(record, outcome.access, message))
        if record.state is ComputeState.FAILED:
            if record.decision is not None and not record.decision.feasible:
                raise infeasible(request_id, record.decision)
            raise ApiError(
                502, "allocation-failed", f"no provider could allocate the request: {record.error}",
                {
                    "request_id": request_id,
                    "status_url": status_url(request_id),
                    "attempts": [
                        {"offer_id": a.offer_id, "outcome": a.outcome.value, "error": a.error} for a in record.attempts
                    ],
                },
            )
        raise ApiError(409, "compute-request-terminated", f"compute request {request_id} is {record.state.value}",
                       {"request_id": request_id, "state": record.state.value})

    async def quote(self, request: ComputeRequest, limit: int) -> Reply:
        async def run() -> Reply:
            self._live_tenant(request.tenant_id)
            await self.runtime.refresh_for(request)  # COMPUTE_QUOTE_ON_REQUEST: the engine's current quote first
            decision, refusal = self.runtime.quote(request)
            return Reply.of(ComputeQuote.of(decision, refusal, limit))

        return await _reply(run())

    async def listing(self, query: ListQuery) -> Reply:
        async def run() -> Reply:
            assert query.tenant_id is not None
            if self.tenant(query.tenant_id) is None:  # a deleted tenant's requests are still listed
                raise tenant_not_found(query.tenant_id)
            return Reply.of(page_of(self.runtime.tenant_records(query.tenant_id), query))

        return await _reply(run())

    async def status(self, request_id: str) -> Reply:
        async def run() -> Reply:
            record = self._record(request_id)
            body = ComputeStatusResponse.model_validate(
                {**record.model_dump(), "access_claimable": self.runtime.vault.holds(request_id)}
            )
            return Reply.of(body)

        return await _reply(run())

    async def terminate(self, request_id: str) -> Reply:
        async def run() -> Reply:
            self._record(request_id)
            record = await self.runtime.terminate(request_id)
            body = ComputeStatusResponse.model_validate({**record.model_dump(), "access_claimable": False})
            return Reply.of(body, 200 if record.terminal else 202)

        return await _reply(run())

    async def claim(self, request_id: str) -> Reply:
        async def run() -> Reply:
            record = self._record(request_id)
            if record.state in (ComputeState.REQUESTED, ComputeState.ALLOCATING, ComputeState.PROVISIONING):
                raise ApiError(409, "access-not-ready", f"compute request {request_id} is {record.state.value}; "
                               "claim its access details once it is running", {"state": record.state.value})
            access = self.runtime.claim(request_id) if record.state is ComputeState.RUNNING else None
            if access is None:
                raise ApiError(
                    410, "access-gone",
                    f"the access details of {request_id} were handed out already, expired unclaimed, or the request "
                    f"is {record.state.value}: they are never stored; terminate the request and request again",
                    {"state": record.state.value},
                )
            return Reply(200, access.reveal())

        return await _reply(run())

    async def capacity(self, tenant_id: str | None) -> Reply:
        async def run() -> Reply:
            if tenant_id is not None:
                self._live_tenant(tenant_id)
            others = await self.peers_holding() if self.peers_holding is not None else []
            view: CapacityView = self.runtime.capacity(tenant_id, others)
            return Reply.of(view)

        return await _reply(run())

    def holding(self) -> list[dict[str, Any]]:
        return [record.model_dump(mode="json") for record in self.runtime.holding()]
