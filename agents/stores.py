"""The typed tables the agents hand to the domain functions."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.tenants.logic import TenantStores
from tables.provisioning_status import provisioning_status
from tables.quotas import quotas
from tables.tenants import tenants
from tables.users import users

STORES = TenantStores(tenants=tenants, quotas=quotas, status=provisioning_status, users=users)


def now() -> datetime:
    return datetime.now(UTC)
