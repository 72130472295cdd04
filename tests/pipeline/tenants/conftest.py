from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.events.models import TenantCreated, Tier
from pipeline.tenants.logic import TenantStores
from pipeline.tenants.models import ProvisioningStatus, QuotaRecord, TenantRecord, UserRecord
from pipeline.tenants.tiers import quota_for_tier
from pipeline.typed_table import TypedTable

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def stores() -> TenantStores:
    return TenantStores(
        tenants=TypedTable({}, TenantRecord),
        quotas=TypedTable({}, QuotaRecord),
        status=TypedTable({}, ProvisioningStatus),
        users=TypedTable({}, UserRecord),
    )


def tenant_created(tenant_id: str = "acme", event_id: str = "evt-1", tier: Tier = Tier.STANDARD) -> TenantCreated:
    return TenantCreated(
        event_id=event_id, tenant_id=tenant_id, occurred_at=NOW, name="Acme Corp", tier=tier, owner_user_id="alice"
    )


__all__ = ["NOW", "quota_for_tier", "tenant_created"]
