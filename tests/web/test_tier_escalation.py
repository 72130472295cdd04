"""The tier sets a tenant's quota and its fair-share weight: only a platform-admin chooses it. A tenant-admin
provisioning (or deleting and re-provisioning) its own tenant gets the self-service tier (free), and a request
for any other tier is refused with 403 before anything is sent."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from pipeline.events.models import Tier
from tests.web.conftest import ADMIN, TIER_QUOTAS, bearer, error_of, token
from tests.web.memory_state import MemoryState

ACME_ADMIN = token(("tenant-admin",), "acme", sub="acme-admin")
BODY = {"tenant_id": "acme", "name": "Acme Corporation"}


@pytest.mark.parametrize("tier", ["standard", "enterprise"])
async def test_a_tenant_admin_cannot_choose_a_tier(client: TestClient, state: MemoryState, tier: str) -> None:
    response = await client.post("/api/v1/provision", json={**BODY, "tier": tier}, headers=bearer(ACME_ADMIN))
    assert response.status == 403
    error = await error_of(response)
    assert error["code"] == "tier-not-allowed" and error["details"] == {"requested": tier, "allowed": "free"}
    assert state.submitted == [] and await state.quota("acme") is None
    assert state.audit_log[-1].outcome == "refused" and state.audit_log[-1].actor == "acme-admin"


@pytest.mark.parametrize("body", [BODY, {**BODY, "tier": "free"}])
async def test_a_tenant_admin_gets_the_self_service_tier(
    client: TestClient, state: MemoryState, body: dict[str, str]
) -> None:
    response = await client.post("/api/v1/provision", json=body, headers=bearer(ACME_ADMIN))
    assert response.status == 202
    assert [event.tier for event in state.submitted] == [Tier.FREE]
    quota = await state.quota("acme")
    assert quota is not None and quota.limits == TIER_QUOTAS[Tier.FREE]


async def test_a_tenant_admin_cannot_reprovision_itself_into_a_higher_tier(
    client: TestClient, state: MemoryState
) -> None:
    assert (await client.post("/api/v1/provision", json=BODY, headers=bearer(ACME_ADMIN))).status == 202
    assert (await client.delete("/api/v1/tenants/acme", headers=bearer(ACME_ADMIN))).status == 202
    again = await client.post("/api/v1/provision", json={**BODY, "tier": "enterprise"}, headers=bearer(ACME_ADMIN))
    assert again.status == 403
    assert [event.tier for event in state.submitted] == [Tier.FREE]


async def test_a_tenant_admin_cannot_change_its_quota(client: TestClient, state: MemoryState) -> None:
    assert (await client.post("/api/v1/provision", json=BODY, headers=bearer(ACME_ADMIN))).status == 202
    quota = TIER_QUOTAS[Tier.ENTERPRISE].model_dump()
    response = await client.put("/api/v1/tenants/acme/quota", json=quota, headers=bearer(ACME_ADMIN))
    assert response.status == 403
    stored = await state.quota("acme")
    assert stored is not None and stored.limits == TIER_QUOTAS[Tier.FREE]


@pytest.mark.parametrize(("tier", "expected"), [("enterprise", Tier.ENTERPRISE), (None, Tier.FREE)])
async def test_a_platform_admin_chooses_any_tier(
    client: TestClient, state: MemoryState, tier: str | None, expected: Tier
) -> None:
    body = BODY if tier is None else {**BODY, "tier": tier}
    response = await client.post("/api/v1/provision", json=body, headers=bearer(ADMIN))
    assert response.status == 202
    quota = await state.quota("acme")
    assert quota is not None and quota.limits == TIER_QUOTAS[expected]
