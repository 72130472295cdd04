"""Calls between the workers of one group: the peer credential, its check, the audit of every internal call,
and the rule on which network a peer call (and the secrets it carries) may cross.

The internal endpoints (``/internal/v1/...``) serve every tenant's tables and run compute operations for any
tenant, so their credential must be one no outsider can compute: ``PEER_SECRET``, a random value shared by the
workers only (never derived from ``APP_ID`` or ``JWT_SECRET``: the app id is public and the JWT secret is
absent in production, where tokens are RS256). The worker refuses to start without it.

Peer calls carry that secret, users' bearer tokens and SSH private keys, over the workers' canonical URLs,
which are plain ``http``. They are made only to a loopback address, or when the operator declares the
network between the workers encrypted (``PEER_NETWORK_ENCRYPTED=true``: a service mesh with mutual TLS,
WireGuard...); otherwise they are refused with 503 and nothing is sent.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from pipeline.config import Settings, is_loopback_host
from pipeline.events.models import AuditEvent
from web.errors import ApiError, Handler

logger = logging.getLogger(__name__)

#: The header a peer call carries its credential in.
PEER_HEADER = "X-Peer-Token"
#: Where the internal endpoints live (on the worker's web port; block it at the ingress too).
INTERNAL_PATH_PREFIX = "/internal/"
#: Shortest PEER_SECRET accepted (256 bits as hex is 64 characters; 32 is the floor).
MIN_PEER_SECRET_CHARS = 32

AuditSink = Callable[[AuditEvent], Awaitable[None]]


class PeerConfigError(ValueError):
    """The worker is not configured to talk to its peers safely."""


def peer_secret(settings: Settings) -> str:
    """``PEER_SECRET``, or :class:`PeerConfigError` with a one-line reason when it is missing or too short."""
    if settings.peer_secret is None:
        raise PeerConfigError(
            "PEER_SECRET is not set: the workers' internal endpoints need a shared random secret "
            "(e.g. `openssl rand -hex 32`); the Makefile sets a development one"
        )
    value = settings.peer_secret.get_secret_value()
    if len(value) < MIN_PEER_SECRET_CHARS or not value.strip():
        raise PeerConfigError(f"PEER_SECRET must be at least {MIN_PEER_SECRET_CHARS} characters")
    return value


def is_peer(request: web.Request, secret: str) -> bool:
    """Whether the request carries the peer credential (compared in constant time)."""
    offered = request.headers.get(PEER_HEADER, "")
    return hmac.compare_digest(offered.encode("utf-8", "replace"), secret.encode())


def require_peer(request: web.Request, secret: str) -> None:
    """403 unless the request carries the peer credential."""
    if not is_peer(request, secret):
        raise ApiError(403, "forbidden", "internal endpoint: peer credential missing or wrong")


def peer_headers(secret: str) -> dict[str, str]:
    return {PEER_HEADER: secret}


def transport_allowed(url: URL, network_encrypted: bool) -> bool:
    """Whether a peer call carrying secrets may go to ``url``: https, a loopback address, or a network the
    operator declared encrypted."""
    return url.scheme == "https" or is_loopback_host(url.host) or network_encrypted


def insecure_transport(url: URL) -> ApiError:
    logger.error("refused a peer call to %s: plain http off 127.0.0.1 (set PEER_NETWORK_ENCRYPTED=true only "
                 "behind mutual TLS or an encrypted pod network)", url.with_path("/"))
    return ApiError(503, "peer-transport-insecure",
                    "the worker owning this tenant is reachable only over plain http; the call was not made",
                    headers={"Retry-After": "30"})


# -- audit of internal calls ---------------------------------------------------------------------------


def _tenant_of_path(request: web.Request) -> str | None:
    if key := request.match_info.get("key"):
        return key[:64]
    if request_id := request.match_info.get("request_id"):
        return request_id.split(".", 1)[0][:64]
    tenant = request.query.get("tenant_id")
    return tenant[:64] if tenant else None


def _outcome(status: int) -> Literal["succeeded", "refused", "failed"]:
    if status < 400:
        return "succeeded"
    return "refused" if status < 500 else "failed"


def peer_middleware(secret: str, audit: AuditSink) -> Middleware:
    """Guard and audit every ``/internal/`` call: one record per call, reads included (they hand out every
    tenant's tables and SSH private keys), with the caller's address and whether it proved to be a peer."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(INTERNAL_PATH_PREFIX):
            return await handler(request)
        trusted = is_peer(request, secret)
        status = 500
        try:
            if not trusted:
                require_peer(request, secret)
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            await _audit(audit, request, trusted, status)

    return middleware


async def _audit(audit: AuditSink, request: web.Request, trusted: bool, status: int) -> None:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    pattern = resource.canonical if resource is not None else "unmatched"
    detail: dict[str, Any] = {
        "method": request.method, "route": pattern, "status": status, "peer": request.remote or "unknown",
        "peer_credential": "valid" if trusted else "missing-or-wrong",
    }
    record = AuditEvent(
        event_id=uuid.uuid4().hex,
        occurred_at=datetime.now(UTC),
        actor=f"peer:{request.remote or 'unknown'}" if trusted else "anonymous",
        action=f"internal-{route.name}" if route is not None and route.name else "internal-call",
        tenant_id=_tenant_of_path(request),
        outcome=_outcome(status),
        detail=detail,
    )
    try:
        await audit(record)
    except Exception:
        logger.exception("could not write the audit record %s", record.model_dump_json())
