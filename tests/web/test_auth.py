from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.web.conftest import ADMIN, SECRET, FakeReadiness, bearer, error_of, fixed_quota, tenant_event, token
from tests.web.memory_state import MemoryState
from web.auth import Authenticator, AuthError, AuthUnavailable, Role, issue_dev_token
from web.server import build_root_app

QUOTA = {"cpu_cores": 2, "memory_gib": 4, "gpus": 0, "storage_gib": 10}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, the way an attacker would (PyJWT refuses to make some of these)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "sub": "mallory",
        "tenant_id": None,
        "roles": ["platform-admin"],
        "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()),
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def rs256(key: rsa.RSAPrivateKey, kid: str | None = None, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers={"kid": kid} if kid else None)


# -- HTTP: 401 ---------------------------------------------------------------------------------------


async def assert_401(response: Any, fragment: str) -> None:
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = await error_of(response)
    assert error["code"] == "unauthorized"
    assert fragment in error["message"]


def expired() -> str:
    return issue_dev_token(SECRET, "alice", ["platform-admin"], None, timedelta(minutes=5),
                           now=datetime.now(UTC) - timedelta(hours=1))


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Basic YWxpY2U6cGFzcw=="}, "Bearer <token>"),
        ({"Authorization": "Bearer"}, "Bearer <token>"),
        ({"Authorization": "Bearer not.a.jwt"}, "malformed token"),
    ],
)
async def test_requests_without_a_usable_token_are_401(client: TestClient, headers: dict[str, str], fragment: str):
    await assert_401(await client.get("/api/v1/tenants", headers=headers), fragment)


async def test_expired_token_is_401(client: TestClient):
    await assert_401(await client.get("/api/v1/tenants", headers=bearer(expired())), "expired")


async def test_token_signed_with_another_secret_is_401(client: TestClient):
    other = token(secret="another-secret-that-is-long-enough-0123456789")
    await assert_401(await client.get("/api/v1/tenants", headers=bearer(other)), "signature")


async def test_tampered_token_is_401(client: TestClient):
    header, payload, signature = ADMIN.split(".")
    claims_ = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims_["sub"] = "someone-else"
    tampered = f"{header}.{b64url(json.dumps(claims_).encode())}.{signature}"
    await assert_401(await client.get("/api/v1/tenants", headers=bearer(tampered)), "signature")


async def test_alg_none_is_401(client: TestClient):
    unsigned = forge({"alg": "none", "typ": "JWT"}, claims(), None)
    await assert_401(await client.get("/api/v1/tenants", headers=bearer(unsigned)), "'none' is not accepted")
    unsigned = forge({"alg": "None", "typ": "JWT"}, claims(), None)
    await assert_401(await client.get("/api/v1/tenants", headers=bearer(unsigned)), "not accepted")
    weird = forge({"alg": "\u00e9\r\nX-Injected: 1" + "A" * 500, "typ": "JWT"}, claims(), None)
    response = await client.get("/api/v1/tenants", headers=bearer(weird))
    await assert_401(response, "not accepted")
    assert "X-Injected" not in response.headers and len(response.headers["WWW-Authenticate"]) < 300


@pytest.mark.parametrize("missing", ["sub", "tenant_id", "roles", "exp"])
async def test_tokens_missing_a_required_claim_are_401(client: TestClient, missing: str):
    body = claims()
    del body[missing]
    await assert_401(await client.get("/api/v1/tenants", headers=bearer(jwt.encode(body, SECRET))), missing)


async def test_a_tenant_role_without_a_tenant_is_401(client: TestClient):
    bad = jwt.encode(claims(roles=["tenant-admin"], tenant_id=None), SECRET)
    await assert_401(await client.get("/api/v1/tenants", headers=bearer(bad)), "tenant_id")


async def test_a_token_with_no_known_role_is_403(client: TestClient):
    response = await client.get("/api/v1/tenants", headers=bearer(token(("auditor",), "acme")))
    assert response.status == 403
    assert (await error_of(response))["code"] == "forbidden"


async def test_openapi_needs_no_token(client: TestClient):
    assert (await client.get("/api/v1/openapi.json")).status == 200


# -- HTTP: 403 and what each role may do --------------------------------------------------------------


@pytest.fixture
async def seeded(state: MemoryState) -> MemoryState:
    for tenant_id in ("acme", "globex"):
        await state.submit_tenant(tenant_event(tenant_id))
    return state


@pytest.mark.parametrize("role", ["tenant-admin", "tenant-viewer"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/tenants/globex", None),
        ("GET", "/api/v1/tenants/globex/provisioning-status", None),
        ("GET", "/api/v1/tenants/globex/quota", None),
        ("PUT", "/api/v1/tenants/globex/quota", QUOTA),
        ("DELETE", "/api/v1/tenants/globex", None),
        ("GET", "/api/v1/tenants/ghost", None),  # no existence oracle across tenants
        ("POST", "/api/v1/provision", {"tenant_id": "newco", "name": "New Co", "tier": "free"}),
    ],
)
async def test_a_tenant_token_on_another_tenant_is_403(
    client: TestClient, seeded: MemoryState, role: str, method: str, path: str, body: Any
):
    response = await client.request(method, path, json=body, headers=bearer(token((role,), "acme", sub="eve")))
    assert response.status == 403
    assert (await error_of(response))["code"] == "forbidden"
    assert (await seeded.tenant("globex")).state.value == "active"  # type: ignore[union-attr]
    assert await seeded.tenant("newco") is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/v1/tenants/acme/quota", QUOTA),
        ("DELETE", "/api/v1/tenants/acme", None),
        ("POST", "/api/v1/provision", {"tenant_id": "acme", "name": "Acme again", "tier": "free"}),
    ],
)
async def test_a_viewer_cannot_write_its_own_tenant(
    client: TestClient, seeded: MemoryState, method: str, path: str, body: Any
):
    viewer = token(("tenant-viewer",), "acme", sub="victor")
    response = await client.request(method, path, json=body, headers=bearer(viewer))
    assert response.status == 403
    assert "viewer" in (await error_of(response))["message"]
    assert (await seeded.tenant("acme")).state.value == "active"  # type: ignore[union-attr]
    [record] = seeded.audit_log
    assert record.actor == "victor" and record.outcome == "refused" and record.tenant_id == "acme"


async def test_a_viewer_reads_its_own_tenant(client: TestClient, seeded: MemoryState):
    viewer = bearer(token(("tenant-viewer",), "acme"))
    for path in ("/api/v1/tenants/acme", "/api/v1/tenants/acme/quota", "/api/v1/tenants/acme/provisioning-status"):
        assert (await client.get(path, headers=viewer)).status == 200


async def test_a_tenant_admin_manages_its_own_tenant_but_not_its_quota(client: TestClient, seeded: MemoryState):
    admin = bearer(token(("tenant-admin",), "acme", sub="ada"))
    response = await client.put("/api/v1/tenants/acme/quota", json=QUOTA, headers=admin)
    assert response.status == 403
    assert "platform-admin" in (await error_of(response))["message"]
    assert (await client.delete("/api/v1/tenants/acme", headers=admin)).status == 202
    newco = bearer(token(("tenant-admin",), "newco", sub="nina"))
    response = await client.post(
        "/api/v1/provision", json={"tenant_id": "newco", "name": "New Co", "tier": "free"}, headers=newco
    )
    assert response.status == 202


async def test_a_platform_admin_may_do_everything(client: TestClient, seeded: MemoryState):
    admin = bearer(token(("platform-admin",), None, sub="root"))
    assert (await client.get("/api/v1/tenants", headers=admin)).status == 200
    assert (await client.get("/api/v1/tenants/globex/quota", headers=admin)).status == 200
    assert (await client.put("/api/v1/tenants/globex/quota", json=QUOTA, headers=admin)).status == 202
    assert (await client.delete("/api/v1/tenants/acme?purge=true", headers=admin)).status == 202
    response = await client.post(
        "/api/v1/provision", json={"tenant_id": "newco", "name": "New Co", "tier": "free"}, headers=admin
    )
    assert response.status == 202
    # a platform admin's token may name a home tenant; it still reaches every tenant
    homed = bearer(token(("platform-admin",), "acme", sub="root"))
    assert (await client.get("/api/v1/tenants/globex", headers=homed)).status == 200


# -- audit records ------------------------------------------------------------------------------------


async def test_every_mutation_is_audited_with_who_what_tenant_when_and_outcome(
    client: TestClient, seeded: MemoryState
):
    before = datetime.now(UTC)
    admin_token = token(("platform-admin",), None, sub="root")
    viewer_token = token(("tenant-viewer",), "acme", sub="victor")
    calls = [
        ("POST", "/api/v1/provision", {"tenant_id": "newco", "name": "New Co", "tier": "free"}, admin_token),
        ("POST", "/api/v1/provision?dry_run=true", {"tenant_id": "dry", "name": "Dry", "tier": "free"}, admin_token),
        ("PUT", "/api/v1/tenants/acme/quota", QUOTA, admin_token),
        ("DELETE", "/api/v1/tenants/globex?purge=true", None, admin_token),
        ("PUT", "/api/v1/tenants/acme/quota", QUOTA, viewer_token),
        ("DELETE", "/api/v1/tenants/acme", None, None),
        ("DELETE", "/api/v1/tenants/ghost", None, admin_token),
        ("PUT", "/api/v1/tenants/acme/quota", {"cpu_cores": -1}, admin_token),
        ("POST", "/api/v1/provision", {"tenant_id": "acme", "name": "Again", "tier": "free"}, admin_token),
        ("POST", "/api/v1/nowhere", {}, admin_token),
    ]
    statuses = []
    for method, path, body, who in calls:
        headers = bearer(who) if who else {}
        statuses.append((await client.request(method, path, json=body, headers=headers)).status)
    assert statuses == [202, 200, 202, 202, 403, 401, 404, 422, 409, 404]
    # reads are not audited
    await client.get("/api/v1/tenants", headers=bearer(admin_token))

    log = seeded.audit_log
    assert len(log) == len(calls)
    summary = [(r.actor, r.action, r.tenant_id, r.outcome, r.detail["status"]) for r in log]
    assert summary == [
        ("root", "provision-tenant", "newco", "accepted", 202),
        ("root", "provision-tenant", "dry", "succeeded", 200),
        ("root", "set-quota", "acme", "accepted", 202),
        ("root", "delete-tenant", "globex", "accepted", 202),
        ("victor", "set-quota", "acme", "refused", 403),
        ("anonymous", "delete-tenant", "acme", "refused", 401),
        ("root", "delete-tenant", "ghost", "refused", 404),
        ("root", "set-quota", "acme", "refused", 422),
        ("root", "provision-tenant", "acme", "refused", 409),
        ("root", "unknown-route", None, "refused", 404),
    ]
    for record in log:
        assert before <= record.occurred_at <= datetime.now(UTC)
        assert record.occurred_at.tzinfo is not None
        assert record.detail["method"] in {"POST", "PUT", "DELETE"}
    assert log[2].detail["route"] == "/api/v1/tenants/{tenant_id}/quota"
    assert log[2].detail["requested"] == QUOTA
    assert log[3].detail["purge"] is True
    assert log[4].detail["error_code"] == "forbidden"
    assert log[5].detail["reason"] == "missing bearer token"
    # no token or secret ends up in the audit stream
    dumped = "".join(r.model_dump_json() for r in log)
    for secret in (SECRET, admin_token, viewer_token, admin_token.split(".")[2]):
        assert secret not in dumped


async def test_a_refused_token_is_audited_as_anonymous_without_the_token(client: TestClient, seeded: MemoryState):
    bad = token(secret="another-secret-that-is-long-enough-0123456789", sub="forger")
    response = await client.delete("/api/v1/tenants/acme", headers=bearer(bad))
    assert response.status == 401
    [record] = seeded.audit_log
    assert record.actor == "anonymous" and record.outcome == "refused" and record.tenant_id == "acme"
    assert bad not in record.model_dump_json() and "forger" not in record.model_dump_json()


# -- RS256 with a public key ---------------------------------------------------------------------------


@pytest.fixture
def rs_client_factory(state: MemoryState):
    clients: list[TestClient] = []

    async def make(auth: Authenticator) -> TestClient:
        app = build_root_app(state, state, auth, FakeReadiness(), None)
        test_client = TestClient(TestServer(app))
        await test_client.start_server()
        clients.append(test_client)
        return test_client

    yield make


@pytest.fixture
async def rs_client(rs_client_factory, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[TestClient]:
    test_client = await rs_client_factory(Authenticator(rs256_public_key=public_pem(rsa_key), hs256_secret=SECRET))
    yield test_client
    await test_client.close()


async def test_rs256_token_is_accepted_with_the_public_key(rs_client: TestClient, rsa_key: rsa.RSAPrivateKey):
    assert (await rs_client.get("/api/v1/tenants", headers=bearer(rs256(rsa_key)))).status == 200


async def test_rs256_token_signed_by_another_key_is_401(rs_client: TestClient, other_rsa_key: rsa.RSAPrivateKey):
    await assert_401(await rs_client.get("/api/v1/tenants", headers=bearer(rs256(other_rsa_key))), "signature")


async def test_key_confusion_hs256_signed_with_the_public_key_is_401(
    rs_client: TestClient, rsa_key: rsa.RSAPrivateKey
):
    pem = public_pem(rsa_key).encode()
    confused = forge({"alg": "HS256", "typ": "JWT"}, claims(), pem)
    await assert_401(await rs_client.get("/api/v1/tenants", headers=bearer(confused)), "'HS256' is not accepted")


async def test_hs256_with_the_dev_secret_is_refused_once_rs256_is_configured(rs_client: TestClient):
    await assert_401(await rs_client.get("/api/v1/tenants", headers=bearer(ADMIN)), "'HS256' is not accepted")


def test_a_public_key_may_be_given_as_a_file_path_or_with_escaped_newlines(tmp_path, rsa_key):
    path = tmp_path / "jwt.pem"
    path.write_text(public_pem(rsa_key))
    assert Authenticator(rs256_public_key=str(path)).algorithm == "RS256"
    assert Authenticator(rs256_public_key=public_pem(rsa_key).replace("\n", "\\n")).algorithm == "RS256"


def test_short_or_non_rsa_public_keys_are_rejected_at_configuration():
    from cryptography.hazmat.primitives.asymmetric import ec

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (must be refused)
    with pytest.raises(ValueError, match="at least 2048"):
        Authenticator(rs256_public_key=public_pem(small))
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(ValueError, match="not an RSA public key"):
        Authenticator(rs256_public_key=ec_pem)


# -- RS256 with a JWKS URL -----------------------------------------------------------------------------


class JwksServer:
    def __init__(self, key: rsa.RSAPrivateKey, kid: str) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.document: dict[str, Any] = {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}
        self.requests = 0
        self.fail = False
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self.serve)
        self.server = TestServer(app)

    async def serve(self, _request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail:
            return web.Response(status=503)
        return web.json_response(self.document)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/.well-known/jwks.json"))


@pytest.fixture
async def jwks(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[JwksServer]:
    server = JwksServer(rsa_key, kid="key-2024")
    await server.server.start_server()
    yield server
    await server.server.close()


async def test_jwks_keys_verify_tokens_by_kid(jwks: JwksServer, rsa_key, other_rsa_key):
    auth = Authenticator(jwks_url=jwks.url)
    principal = await auth.authenticate(rs256(rsa_key, kid="key-2024", sub="carol", roles=["tenant-admin"],
                                              tenant_id="acme"))
    assert principal.sub == "carol" and principal.tenant_id == "acme" and principal.roles == {Role.TENANT_ADMIN}
    await auth.authenticate(rs256(rsa_key, kid="key-2024"))
    assert jwks.requests == 1  # the key set is cached

    with pytest.raises(AuthError, match="signature"):
        await auth.authenticate(rs256(other_rsa_key, kid="key-2024"))
    with pytest.raises(AuthError, match="key id is unknown"):
        await auth.authenticate(rs256(rsa_key, kid="rotated-away"))
    with pytest.raises(AuthError, match="kid"):
        await auth.authenticate(rs256(rsa_key))
    with pytest.raises(AuthError, match="'HS256' is not accepted"):
        await auth.authenticate(forge({"alg": "HS256", "kid": "key-2024"}, claims(), b"guess"))
    assert jwks.requests <= 2  # an unknown kid refreshes at most once per cooldown


async def test_jwks_over_http_end_to_end(jwks: JwksServer, rsa_key, rs_client_factory):
    client = await rs_client_factory(Authenticator(jwks_url=jwks.url))
    try:
        assert (await client.get("/api/v1/tenants", headers=bearer(rs256(rsa_key, kid="key-2024")))).status == 200
        await assert_401(await client.get("/api/v1/tenants", headers=bearer(ADMIN)), "not accepted")
    finally:
        await client.close()


async def test_an_unreachable_jwks_is_503_not_401(jwks: JwksServer, rsa_key, rs_client_factory):
    jwks.fail = True
    client = await rs_client_factory(Authenticator(jwks_url=jwks.url))
    try:
        response = await client.get("/api/v1/tenants", headers=bearer(rs256(rsa_key, kid="key-2024")))
        assert response.status == 503
        assert (await error_of(response))["code"] == "auth-unavailable"
    finally:
        await client.close()
    with pytest.raises(AuthUnavailable):
        await Authenticator(jwks_url=jwks.url).authenticate(rs256(rsa_key, kid="key-2024"))


# -- audience, issuer, configuration ---------------------------------------------------------------


async def test_audience_and_issuer_are_checked_when_configured():
    auth = Authenticator(hs256_secret=SECRET, audience="provisioning", issuer="https://idp.example")
    good = issue_dev_token(SECRET, "alice", ["platform-admin"], None, audience="provisioning",
                           issuer="https://idp.example")
    assert (await auth.authenticate(good)).sub == "alice"
    with pytest.raises(AuthError, match="audience"):
        await auth.authenticate(issue_dev_token(SECRET, "a", ["platform-admin"], None, audience="other",
                                                issuer="https://idp.example"))
    with pytest.raises(AuthError, match="iss"):
        await auth.authenticate(issue_dev_token(SECRET, "a", ["platform-admin"], None, audience="provisioning"))


async def test_nothing_configured_refuses_every_token(caplog: pytest.LogCaptureFixture):
    auth = Authenticator()
    assert "no JWT verification key" in caplog.text
    with pytest.raises(AuthError, match="no token verification key"):
        await auth.authenticate(ADMIN)


async def test_from_settings_picks_the_algorithm(rsa_key):
    from pydantic import SecretStr

    from pipeline.config import Settings

    dev = Authenticator.from_settings(Settings(jwt_secret=SecretStr(SECRET)))
    assert dev.algorithm == "HS256" and (await dev.authenticate(ADMIN)).sub == "root-admin"
    prod = Authenticator.from_settings(Settings(jwt_secret=SecretStr(SECRET), jwt_public_key=public_pem(rsa_key)))
    assert prod.algorithm == "RS256"


async def test_issue_dev_token_round_trips():
    value = issue_dev_token(SECRET, "dev", ["platform-admin"], None, timedelta(hours=1))
    principal = await Authenticator(hs256_secret=SECRET).authenticate(value)
    assert principal.sub == "dev" and principal.is_platform_admin and principal.tenant_id is None
    assert timedelta(minutes=59) < principal.expires_at - datetime.now(UTC) <= timedelta(hours=1)
    assert jwt.get_unverified_header(value)["alg"] == "HS256"


def test_memory_state_fixture_helper_is_deterministic():
    assert fixed_quota.__name__ == "fixed_quota"


# -- JWKS refetches: rate limited, off the shared thread pool ------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_of_unknown_kids_causes_at_most_one_refetch(jwks: JwksServer, rsa_key):
    clock = FakeClock()
    auth = Authenticator(jwks_url=jwks.url, jwks_min_refetch_interval=30, clock=clock)
    await auth.authenticate(rs256(rsa_key, kid="key-2024"))
    assert jwks.requests == 1
    forged = [rs256(rsa_key, kid=f"made-up-{i}") for i in range(100)]
    results = await asyncio.gather(*(auth.authenticate(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, AuthError) and "unknown" in str(r) for r in results)
    assert jwks.requests <= 2  # was one blocking fetch per request
    clock.now += 10
    for forged_token in forged[:20]:
        with pytest.raises(AuthError, match="unknown"):
            await auth.authenticate(forged_token)
    assert jwks.requests <= 2
    await auth.authenticate(rs256(rsa_key, kid="key-2024"))  # the known key still verifies, from the cache
    assert jwks.requests <= 2


async def test_a_rotated_in_key_is_fetched_once_the_interval_has_passed(jwks: JwksServer, rsa_key, other_rsa_key):
    clock = FakeClock()
    auth = Authenticator(jwks_url=jwks.url, jwks_min_refetch_interval=30, clock=clock)
    await auth.authenticate(rs256(rsa_key, kid="key-2024"))
    new = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other_rsa_key.public_key()))
    jwks.document["keys"].append({**new, "kid": "key-2025", "use": "sig", "alg": "RS256"})
    clock.now += 31
    principal = await auth.authenticate(rs256(other_rsa_key, kid="key-2025", sub="rotated"))
    assert principal.sub == "rotated" and jwks.requests == 2


async def test_an_unreachable_jwks_keeps_the_known_keys_and_is_not_hammered(jwks: JwksServer, rsa_key):
    clock = FakeClock()
    auth = Authenticator(jwks_url=jwks.url, jwks_lifespan=60, jwks_min_refetch_interval=30, clock=clock)
    await auth.authenticate(rs256(rsa_key, kid="key-2024"))
    jwks.fail = True
    clock.now += 61  # the key set is stale: one refetch, which fails
    for _ in range(10):
        await auth.authenticate(rs256(rsa_key, kid="key-2024"))
    assert jwks.requests == 2


async def test_jwks_fetches_run_on_their_own_thread(jwks: JwksServer, rsa_key, monkeypatch):
    import threading

    threads: list[str] = []
    fetch = jwt.PyJWKClient.fetch_data

    def recording(self):
        threads.append(threading.current_thread().name)
        return fetch(self)

    monkeypatch.setattr(jwt.PyJWKClient, "fetch_data", recording)
    await Authenticator(jwks_url=jwks.url).authenticate(rs256(rsa_key, kid="key-2024"))
    assert len(threads) == 1 and threads[0].startswith("jwks-fetch")
