"""Helpers of the provisioner tests: settings from a service's exports, unique tenants, the packaged tiers,
the provisioner under test, clean-up of the tenants a test made, and the checks every ``delete`` must pass."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from pipeline.config import Settings
from pipeline.provisioners.base import BaseProvisioner, Provisioner, TenantSpec
from pipeline.provisioners.registry import build_provisioner
from pipeline.provisioners.tiers import TiersConfig, load_tiers

#: Runs of the test-suite never share tenant ids (the servers may be reused across runs).
RUN = secrets.token_hex(3)

P = TypeVar("P", bound=BaseProvisioner)

#: How many of a tenant's resources the server holds (0 or 1), read with the server's own client.
ResourceCount = Callable[[TenantSpec], Awaitable[int]]


def settings_from(exports: dict[str, str]) -> Settings:
    """Settings pointing at the servers a session fixture started (its env exports)."""
    return Settings(**{key.lower(): value for key, value in exports.items()})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiers() -> TiersConfig:
    return load_tiers()


@pytest.fixture
def make_tenant(request: pytest.FixtureRequest) -> Callable[..., TenantSpec]:
    """``make_tenant(tier="standard", **fields)``: a tenant whose id is unique to this run and test."""
    counter = iter(range(1000))

    def make(tier: str = "standard", **fields: object) -> TenantSpec:
        base = request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")[:18].strip("-")
        tenant_id = f"{base}-{RUN}-{next(counter)}"
        values: dict[str, object] = {
            "tenant_id": tenant_id,
            "name": f"Test tenant {tenant_id}",
            "tier": tier,
            "owner_user_id": f"{tenant_id}-owner@example.com",
            **fields,
        }
        return TenantSpec.model_validate(values)

    return make


def provisioner_fixture(provisioner_type: type[P]) -> Callable[..., AsyncIterator[P]]:
    """A ``provisioner`` fixture: the registry's provisioner of ``provisioner_type.resource``, pointed at the
    ``<resource>_service`` server and closed after the test."""
    resource = provisioner_type.resource

    @pytest.fixture
    async def provisioner(request: pytest.FixtureRequest, tiers: TiersConfig) -> AsyncIterator[P]:
        exports: dict[str, str] = request.getfixturevalue(f"{resource}_service")
        built = build_provisioner(resource, settings_from(exports), tiers)
        assert isinstance(built, provisioner_type)
        yield built
        await built.aclose()

    return provisioner


@asynccontextmanager
async def deleted_after(provisioner: Provisioner, *tenants: TenantSpec) -> AsyncIterator[None]:
    """Purge ``tenants`` when the block ends, however it ends (the servers are shared by later runs)."""
    try:
        yield
    finally:
        for tenant in tenants:
            await provisioner.delete(tenant, purge=True)


@asynccontextmanager
async def applied(provisioner: Provisioner, *tenants: TenantSpec) -> AsyncIterator[None]:
    """Apply ``tenants`` for the block, and purge them when it ends, however it ends."""
    async with deleted_after(provisioner, *tenants):
        for tenant in tenants:
            await provisioner.apply(tenant)
        yield


async def assert_kept_without_purge(
    provisioner: Provisioner, tenant: TenantSpec, item: str, count: ResourceCount
) -> None:
    """``delete`` without ``purge`` reports the tenant's data-bearing resource as kept, and keeps it."""
    kept = await provisioner.delete(tenant, purge=False)
    assert kept.kept == [item] and kept.deleted == []
    assert await count(tenant) == 1


async def assert_deletes_only_this_tenant(
    provisioner: Provisioner, tenant: TenantSpec, other: TenantSpec, deleted: list[str], count: ResourceCount,
    *, purge: bool = False,
) -> None:
    """``delete`` removes ``deleted`` of ``tenant`` and nothing of ``other``; deleting again finds it absent."""
    result = await provisioner.delete(tenant, purge=purge)
    assert result.deleted == deleted
    assert await count(tenant) == 0
    assert await count(other) == 1
    again = await provisioner.delete(tenant, purge=purge)
    assert again.deleted == [] and again.absent == deleted
