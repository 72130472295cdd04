"""The Cassandra provisioner: CQL it builds, and against the local Cassandra (checked with cassandra-driver)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cassandra.cluster import Cluster, Session

from devstack import stack
from devstack.base import StackContext
from pipeline.provisioners.base import TenantSpec
from pipeline.provisioners.cassandra import CassandraProvisioner
from pipeline.provisioners.errors import TransientError
from pipeline.provisioners.tiers import TiersConfig
from tests.pipeline.provisioners.conftest import (
    applied,
    assert_deletes_only_this_tenant,
    assert_kept_without_purge,
    deleted_after,
    provisioner_fixture,
)


def test_ddl_quotes_the_keyspace_and_encodes_the_replication_map() -> None:
    settings = {"replication": {"class": "NetworkTopologyStrategy", "datacenter1": "1"}, "durable_writes": True}
    assert CassandraProvisioner._ddl("CREATE", "tenant_acme", settings) == (
        'CREATE KEYSPACE IF NOT EXISTS "tenant_acme" WITH replication = '
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': '1'} AND durable_writes = true"
    )
    assert CassandraProvisioner._ddl("ALTER", "tenant_acme", settings).startswith('ALTER KEYSPACE "tenant_acme" ')


# -- against the real server -------------------------------------------------------------------------------


provisioner = provisioner_fixture(CassandraProvisioner)


@pytest.fixture
def session(cassandra_service: dict[str, str]) -> Iterator[Session]:
    cluster = Cluster(cassandra_service["CASSANDRA_HOSTS"].split(","), port=int(cassandra_service["CASSANDRA_PORT"]))
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def _keyspace(session: Session, keyspace: str) -> dict[str, object] | None:
    row = session.execute(
        "SELECT replication, durable_writes FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    if row is None:
        return None
    replication = dict(row.replication)
    replication["class"] = replication["class"].rsplit(".", 1)[-1]
    return {"replication": replication, "durable_writes": row.durable_writes}


@pytest.mark.integration
@pytest.mark.parametrize("tier", ["free", "enterprise"])
async def test_apply_creates_the_keyspace_with_the_tier_replication(
    provisioner: CassandraProvisioner, session: Session, make_tenant: Callable[..., TenantSpec],
    tiers: TiersConfig, tier: str,
) -> None:
    tenant = make_tenant(tier)
    keyspace = tenant.names().cassandra_keyspace
    async with deleted_after(provisioner, tenant):
        plan = await provisioner.apply(tenant)
        assert plan.names == {"keyspace": keyspace}
        assert _keyspace(session, keyspace) == {
            "replication": tiers.tier(tier).cassandra.replication(), "durable_writes": True}
        # The keyspace is usable on the one local node (NetworkTopologyStrategy on datacenter1 included).
        session.execute(f'CREATE TABLE "{keyspace}".t (k int PRIMARY KEY, v text)')
        session.set_keyspace(keyspace)
        session.execute("INSERT INTO t (k, v) VALUES (1, %s)", ("x",))
        assert session.execute("SELECT v FROM t WHERE k = 1").one().v == "x"
        assert await provisioner.apply(tenant) == plan  # twice: no error, same result
        assert (await provisioner.verify(tenant)).ok


@pytest.mark.integration
async def test_verify_detects_drift_and_apply_repairs_it(
    provisioner: CassandraProvisioner, session: Session, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("enterprise")
    keyspace = tenant.names().cassandra_keyspace
    async with applied(provisioner, tenant):
        session.execute(f"ALTER KEYSPACE \"{keyspace}\" WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        drift = await provisioner.verify(tenant)
        assert drift.exists and drift.drifted
        assert {d.path for d in drift.differences} >= {"replication.class"}
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok

        session.execute(f'DROP KEYSPACE "{keyspace}"')
        gone = await provisioner.verify(tenant)
        assert not gone.exists and gone.missing == [f"keyspace {keyspace}"]
        await provisioner.apply(tenant)
        assert _keyspace(session, keyspace) is not None


@pytest.mark.integration
async def test_delete_keeps_the_keyspace_unless_purge(
    provisioner: CassandraProvisioner, session: Session, make_tenant: Callable[..., TenantSpec]
) -> None:
    async def keyspaces(of: TenantSpec) -> int:
        return 0 if _keyspace(session, of.names().cassandra_keyspace) is None else 1

    tenant, other = make_tenant(), make_tenant()
    item = f"keyspace {tenant.names().cassandra_keyspace}"
    async with applied(provisioner, tenant, other):
        await assert_kept_without_purge(provisioner, tenant, item, keyspaces)
        await assert_deletes_only_this_tenant(provisioner, tenant, other, [item], keyspaces, purge=True)


@pytest.mark.integration
async def test_a_stopped_server_is_transient_and_the_provisioner_reconnects(
    provisioner: CassandraProvisioner, stack_ctx: StackContext, cassandra_service: dict[str, str],
    make_tenant: Callable[..., TenantSpec],
) -> None:
    before, during = make_tenant(), make_tenant()
    async with deleted_after(provisioner, before, during):
        await provisioner.apply(before)  # connected
        stack.down(stack_ctx, ["cassandra"])
        try:
            with pytest.raises(TransientError):
                await provisioner.apply(during)
        finally:
            stack.up(stack_ctx, ["cassandra"])
        # The same provisioner reconnects on its next call.
        await provisioner.apply(during)
        assert (await provisioner.verify(during)).ok
        assert (await provisioner.verify(before)).ok
