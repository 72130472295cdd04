"""The Ignite provisioner against the local Ignite node, checked with the pyignite thin client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pyignite import Client
from pyignite.datatypes.cache_config import CacheAtomicityMode, CacheMode
from pyignite.datatypes.prop_codes import PROP_BACKUPS_NUMBER, PROP_CACHE_ATOMICITY_MODE, PROP_CACHE_MODE, PROP_NAME

from pipeline.provisioners.base import TenantSpec
from pipeline.provisioners.errors import DriftError
from pipeline.provisioners.ignite import IgniteProvisioner
from tests.pipeline.provisioners.conftest import (
    applied,
    assert_deletes_only_this_tenant,
    assert_kept_without_purge,
    deleted_after,
    provisioner_fixture,
    settings_from,
)

pytestmark = pytest.mark.integration


provisioner = provisioner_fixture(IgniteProvisioner)


@pytest.fixture
def client(ignite_service: dict[str, str]) -> Iterator[Client]:
    settings = settings_from(ignite_service)
    ignite = Client()
    ignite.connect(settings.ignite_host, settings.ignite_port)
    try:
        yield ignite
    finally:
        ignite.close()


@pytest.mark.parametrize(
    ("tier", "mode", "atomicity", "backups"),
    [("free", CacheMode.PARTITIONED, CacheAtomicityMode.ATOMIC, 0),
     ("standard", CacheMode.PARTITIONED, CacheAtomicityMode.ATOMIC, 1),
     ("enterprise", CacheMode.REPLICATED, CacheAtomicityMode.TRANSACTIONAL, None)],
)
async def test_apply_creates_the_cache_with_the_tier_configuration(
    provisioner: IgniteProvisioner, client: Client, make_tenant: Callable[..., TenantSpec],
    tier: str, mode: int, atomicity: int, backups: int | None,
) -> None:
    tenant = make_tenant(tier)
    cache_name = tenant.names().ignite_cache
    async with deleted_after(provisioner, tenant):
        plan = await provisioner.apply(tenant)
        assert await provisioner.apply(tenant) == plan  # twice: no error
        assert client.get_cache_names().count(cache_name) == 1
        config = client.get_cache(cache_name).settings
        assert config[PROP_NAME] == cache_name
        assert config[PROP_CACHE_MODE] == mode
        assert config[PROP_CACHE_ATOMICITY_MODE] == atomicity
        if backups is not None:
            assert config[PROP_BACKUPS_NUMBER] == backups
        client.get_cache(cache_name).put("k", "v")  # usable
        assert (await provisioner.verify(tenant)).ok


async def test_a_cache_deleted_by_hand_is_detected_and_recreated(
    provisioner: IgniteProvisioner, client: Client, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("standard")
    cache_name = tenant.names().ignite_cache
    async with applied(provisioner, tenant):
        client.get_cache(cache_name).destroy()
        gone = await provisioner.verify(tenant)
        assert gone.drifted and gone.missing == [f"cache {cache_name}"]
        await provisioner.apply(tenant)
        assert cache_name in client.get_cache_names()
        assert (await provisioner.verify(tenant)).ok


async def test_a_cache_with_another_configuration_is_drift_that_apply_refuses_to_fix(
    provisioner: IgniteProvisioner, client: Client, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("enterprise")
    cache_name = tenant.names().ignite_cache
    async with deleted_after(provisioner, tenant):
        client.create_cache({PROP_NAME: cache_name, PROP_CACHE_MODE: CacheMode.PARTITIONED,
                             PROP_CACHE_ATOMICITY_MODE: CacheAtomicityMode.ATOMIC})
        drift = await provisioner.verify(tenant)
        assert drift.exists and {d.path for d in drift.differences} == {"cache_mode", "atomicity"}
        with pytest.raises(DriftError):
            await provisioner.apply(tenant)


async def test_delete_destroys_only_this_tenants_cache(
    provisioner: IgniteProvisioner, client: Client, make_tenant: Callable[..., TenantSpec]
) -> None:
    async def caches(of: TenantSpec) -> int:
        return int(client.get_cache_names().count(of.names().ignite_cache))

    tenant, other = make_tenant(), make_tenant()
    async with applied(provisioner, tenant, other):
        await assert_deletes_only_this_tenant(
            provisioner, tenant, other, [f"cache {tenant.names().ignite_cache}"], caches)


async def test_a_cache_holding_entries_is_kept_without_purge(
    provisioner: IgniteProvisioner, client: Client, make_tenant: Callable[..., TenantSpec]
) -> None:
    async def caches(of: TenantSpec) -> int:
        return int(client.get_cache_names().count(of.names().ignite_cache))

    tenant, other = make_tenant(), make_tenant()
    async with applied(provisioner, tenant, other):
        client.get_cache(tenant.names().ignite_cache).put("k", "v")
        await assert_kept_without_purge(provisioner, tenant, f"cache {tenant.names().ignite_cache}", caches)
        await assert_deletes_only_this_tenant(
            provisioner, tenant, other, [f"cache {tenant.names().ignite_cache}"], caches, purge=True)
