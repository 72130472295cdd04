"""Bearer-token (JWT) authentication and the authorization rules of the API and the dashboard stream.

One algorithm is accepted at a time, chosen by configuration:

* RS256 when a public key (``JWT_PUBLIC_KEY``: PEM text, a PEM certificate, or a path to either) or a JWKS
  URL (``JWT_JWKS_URL``) is configured: production. ``JWT_SECRET`` is then ignored, so a token signed with
  HS256 (for instance with the public key as the HMAC secret, the classic key-confusion attack) is refused.
* HS256 with ``JWT_SECRET`` otherwise: development (``issue_dev_token`` mints tokens for ``make run``).
* Nothing configured: every token is refused (fail closed), and the worker logs why.

Claims: ``sub``, ``tenant_id`` (present; may be null for a platform admin), ``roles`` (a list: any of
``platform-admin``, ``tenant-admin``, ``tenant-viewer``) and ``exp`` are required; ``aud`` and ``iss`` are
checked when ``JWT_AUDIENCE`` / ``JWT_ISSUER`` are set.

Rules: a platform admin may do everything; a tenant admin may read and write its own tenant (except its
quota: only a platform admin may change a quota, otherwise a tenant could lift its own limits); a viewer may
only read its own tenant.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from pipeline.config import Settings
from pipeline.events.models import TENANT_ID_PATTERN
from web.errors import ApiError

logger = logging.getLogger(__name__)

HS256 = "HS256"
RS256 = "RS256"
#: Smallest RSA key accepted for verification.
MIN_RSA_BITS = 2048
#: Shortest HS256 secret that does not draw a warning (RFC 7518: at least the hash size).
MIN_HMAC_BYTES = 32
_TENANT_ID = re.compile(TENANT_ID_PATTERN)


class Role(StrEnum):
    PLATFORM_ADMIN = "platform-admin"
    TENANT_ADMIN = "tenant-admin"
    TENANT_VIEWER = "tenant-viewer"


class Access(StrEnum):
    """What an operation needs from the caller."""

    PUBLIC = "public"  # no token
    READ = "read"  # any role, on its own tenant
    WRITE = "write"  # platform-admin, or tenant-admin on its own tenant
    PLATFORM = "platform"  # platform-admin only


@dataclass(frozen=True)
class Principal:
    """The verified caller."""

    sub: str
    tenant_id: str | None
    roles: frozenset[Role]
    expires_at: datetime

    @property
    def is_platform_admin(self) -> bool:
        return Role.PLATFORM_ADMIN in self.roles

    def visible_tenants(self) -> list[str] | None:
        """The tenants this caller may see: None for all of them."""
        if self.is_platform_admin:
            return None
        return [self.tenant_id] if self.tenant_id else []

    def may_see(self, tenant_id: str) -> bool:
        return self.is_platform_admin or tenant_id == self.tenant_id


class AuthError(Exception):
    """The request carries no acceptable token (401)."""


class AuthUnavailable(Exception):
    """The keys to verify tokens cannot be had right now (JWKS endpoint down): 503."""


def unauthorized(reason: str) -> ApiError:
    description = reason.replace('"', "'")
    return ApiError(
        401,
        "unauthorized",
        reason,
        headers={"WWW-Authenticate": f'Bearer realm="provisioning", error="invalid_token", '
                 f'error_description="{description}"'},
    )


def forbidden(reason: str) -> ApiError:
    return ApiError(403, "forbidden", reason)


def authorize(principal: Principal, access: Access, tenant_id: str | None) -> None:
    """Raise a 403 :class:`ApiError` unless ``principal`` may do an ``access`` operation on ``tenant_id``."""
    if access is Access.PUBLIC or principal.is_platform_admin:
        return
    if not principal.roles:
        raise forbidden("the token grants no role of this service")
    if access in (Access.WRITE, Access.PLATFORM) and Role.TENANT_ADMIN not in principal.roles:
        raise forbidden("a tenant-viewer token may not change anything")
    if access is Access.PLATFORM:
        raise forbidden("only a platform-admin may do this")
    if tenant_id is not None and tenant_id != principal.tenant_id:
        raise forbidden("the token is for another tenant")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; :class:`AuthError` if there is none."""
    if not authorization:
        raise AuthError("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def load_rsa_public_key(value: str) -> RSAPublicKey:
    """An RSA public key from PEM text (SubjectPublicKeyInfo or certificate) or a path to a PEM file."""
    text = value.replace("\\n", "\n").strip()
    if not text.startswith("-----BEGIN"):
        text = Path(text).expanduser().read_text(encoding="ascii")
    data = text.encode("ascii")
    key: Any
    if b"BEGIN CERTIFICATE" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("JWT_PUBLIC_KEY is not an RSA public key (RS256 needs one)")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"JWT_PUBLIC_KEY has {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    return key


class Authenticator:
    """Verifies bearer tokens and turns them into a :class:`Principal`."""

    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        rs256_public_key: str | RSAPublicKey | None = None,
        jwks_url: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: timedelta = timedelta(seconds=5),
        jwks_timeout: float = 5.0,
        jwks_lifespan: float = 300.0,
        jwks_min_refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self._hmac_key: bytes | None = None
        self._rsa_key: RSAPublicKey | None = None
        self._jwks: jwt.PyJWKClient | None = None
        self._jwks_keys = _JwksKeys(jwks_lifespan, jwks_min_refetch_interval, clock)
        if rs256_public_key is not None or jwks_url:
            self.algorithm: str | None = RS256
            if isinstance(rs256_public_key, str):
                self._rsa_key = load_rsa_public_key(rs256_public_key)
            else:
                self._rsa_key = rs256_public_key
            if jwks_url:
                self._jwks = jwt.PyJWKClient(jwks_url, cache_jwk_set=False, cache_keys=False, timeout=jwks_timeout)
            if hs256_secret:
                logger.warning("JWT_SECRET is ignored: RS256 keys are configured, so HS256 tokens are refused")
        elif hs256_secret:
            self.algorithm = HS256
            self._hmac_key = hs256_secret.encode()
            if len(self._hmac_key) < MIN_HMAC_BYTES:
                logger.warning("JWT_SECRET is shorter than %d bytes: fine for development only", MIN_HMAC_BYTES)
        else:
            self.algorithm = None
            logger.error(
                "no JWT verification key is configured (JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL): "
                "every API request will be refused with 401"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret is not None else None
        return cls(
            hs256_secret=secret,
            rs256_public_key=settings.jwt_public_key or None,
            jwks_url=settings.jwt_jwks_url or None,
            audience=settings.jwt_audience or None,
            issuer=settings.jwt_issuer or None,
        )

    async def authenticate_header(self, authorization: str | None) -> Principal:
        return await self.authenticate(bearer_token(authorization))

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid token; :class:`AuthError` (401) or :class:`AuthUnavailable` (503)."""
        if self.algorithm is None:
            raise AuthError("the server has no token verification key configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if alg != self.algorithm:
            shown = ascii(alg)[:40]  # attacker-chosen: ASCII only, bounded (it ends up in a header)
            raise AuthError(f"token algorithm {shown} is not accepted (expected {self.algorithm})")
        key = await self._verification_key(header)
        required = ["exp", "sub"] + (["aud"] if self.audience else []) + (["iss"] if self.issuer else [])
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer is not accepted") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token is not valid yet") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None
        return _principal(claims)

    async def _verification_key(self, header: dict[str, Any]) -> Any:
        if self.algorithm == HS256:
            return self._hmac_key
        kid = header.get("kid")
        if self._jwks is not None and (kid is not None or self._rsa_key is None):
            if not isinstance(kid, str) or not kid:
                raise AuthError("token has no 'kid' header to select a signing key")
            return await self._jwks_key(self._jwks, kid)
        return self._rsa_key

    async def _jwks_key(self, client: jwt.PyJWKClient, kid: str) -> RSAPublicKey:
        jwk = await self._jwks_keys.get(client, kid)
        if jwk.algorithm_name != RS256 or not isinstance(jwk.key, RSAPublicKey):
            raise AuthError("token key is not an RS256 key")
        if jwk.key.key_size < MIN_RSA_BITS:
            raise AuthError("token key is too short")
        return jwk.key


class _JwksKeys:
    """The signing keys of a JWKS URL, fetched at most once per ``min_refetch_interval``.

    An unknown ``kid`` may mean the keys were rotated, so it triggers a refetch; but anyone can send tokens
    with made-up kids, so refetches are rate limited (until the interval has passed, an unknown kid is
    refused from the cache) and serialised (a burst causes one fetch). The blocking HTTP fetch runs on a
    thread of its own, never on the event loop's default pool the rest of the worker shares. When the
    endpoint cannot be reached, the keys already known keep verifying tokens.
    """

    def __init__(self, lifespan: float, min_refetch_interval: float, clock: Callable[[], float]) -> None:
        self.lifespan = lifespan
        self.min_refetch_interval = min_refetch_interval
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.fetches = 0

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self.lifespan

    def _may_fetch(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self.min_refetch_interval

    async def get(self, client: jwt.PyJWKClient, kid: str) -> jwt.PyJWK:
        if kid in self._keys and self._fresh(self.clock()):
            return self._keys[kid]
        async with self._lock:
            now = self.clock()
            stale = not self._fresh(now)
            if (stale or kid not in self._keys) and self._may_fetch(now):
                await self._fetch(client, now, required=not self._keys)
            elif not self._keys:
                raise AuthUnavailable("the token signing keys cannot be fetched right now")
        jwk = self._keys.get(kid)
        if jwk is None:
            raise AuthError("token key id is unknown")
        return jwk

    async def _fetch(self, client: jwt.PyJWKClient, now: float, required: bool) -> None:
        self._tried_at = now
        self.fetches += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jwks-fetch")
        loop = asyncio.get_running_loop()
        try:
            keys = await loop.run_in_executor(self._executor, partial(client.get_signing_keys, refresh=True))
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("cannot fetch the JWKS from %s: %s", client.uri, exc)
            if required:
                raise AuthUnavailable("the token signing keys cannot be fetched right now") from None
            return
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
            logger.warning("the JWKS from %s has no usable signing key: %s", client.uri, exc)
            keys = []
        self._keys = {key.key_id: key for key in keys if key.key_id}
        self._fetched_at = now


def _principal(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise AuthError("token 'sub' claim must be a non-empty string")
    if "tenant_id" not in claims:
        raise AuthError("token lacks the 'tenant_id' claim")
    if "roles" not in claims:
        raise AuthError("token lacks the 'roles' claim")
    raw_roles = claims["roles"]
    if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
        raise AuthError("token 'roles' claim must be a list of strings")
    known = {role.value for role in Role}
    roles = frozenset(Role(r) for r in raw_roles if r in known)
    tenant_id = claims["tenant_id"]
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise AuthError("token 'tenant_id' claim must be a string or null")
    if Role.PLATFORM_ADMIN not in roles and roles and (not tenant_id or not _TENANT_ID.fullmatch(tenant_id)):
        raise AuthError("a tenant-scoped token needs a valid 'tenant_id' claim")
    exp = claims["exp"]
    return Principal(
        sub=sub.strip(),
        tenant_id=tenant_id or None,
        roles=roles,
        expires_at=datetime.fromtimestamp(float(exp), UTC),
    )


def issue_dev_token(
    secret: str,
    sub: str,
    roles: Sequence[str],
    tenant_id: str | None,
    ttl: timedelta = timedelta(hours=8),
    *,
    audience: str | None = None,
    issuer: str | None = None,
    now: datetime | None = None,
) -> str:
    """An HS256 token for development (``make run`` prints a platform-admin one)."""
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant_id": tenant_id,
        "roles": list(roles),
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=HS256)
