"""The real local Cassandra 5.0 keeps keyspaces with the replication they were created with, across a restart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Cluster, Session

from devstack import stack
from devstack.base import StackContext
from devstack.cassandra import DATACENTER, PROTOCOL_VERSION

pytestmark = pytest.mark.integration

# Keyspace names below are made here from a uuid (CQL takes no bind markers for identifiers).


def _connect(env: dict[str, str]) -> tuple[Cluster, Session]:
    cluster = Cluster(
        env["CASSANDRA_HOSTS"].split(","), port=int(env["CASSANDRA_PORT"]), protocol_version=PROTOCOL_VERSION
    )
    return cluster, cluster.connect()


@pytest.fixture
def session(cassandra_service: dict[str, str]) -> Iterator[Session]:
    cluster, session = _connect(cassandra_service)
    try:
        yield session
    finally:
        cluster.shutdown()


def _replication(session: Session, keyspace: str) -> dict[str, str]:
    row = session.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)).one()
    assert row is not None, f"keyspace {keyspace} not in system_schema"
    return dict(row.replication)


def test_keyspaces_keep_their_replication(session: Session) -> None:
    run = uuid.uuid4().hex[:12]
    topology, simple = f"devstack_nts_{run}", f"devstack_simple_{run}"
    session.execute(
        f"CREATE KEYSPACE {topology} WITH replication = "
        f"{{'class': 'NetworkTopologyStrategy', '{DATACENTER}': 1}} AND durable_writes = true"
    )
    session.execute(
        f"CREATE KEYSPACE {simple} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    )
    try:
        assert _replication(session, topology) == {
            "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
            DATACENTER: "1",
        }
        assert _replication(session, simple) == {
            "class": "org.apache.cassandra.locator.SimpleStrategy",
            "replication_factor": "1",
        }
        # The keyspace really takes data (its one replica is this node).
        session.execute(f"CREATE TABLE {topology}.quota (tenant text PRIMARY KEY, cpu int)")
        session.execute(f"INSERT INTO {topology}.quota (tenant, cpu) VALUES (%s, %s)", ("t-1", 4))  # noqa: S608 - generated names
        row = session.execute(f"SELECT cpu FROM {topology}.quota WHERE tenant = %s", ("t-1",)).one()  # noqa: S608 - generated names
        assert row is not None and row.cpu == 4
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {topology}")
        session.execute(f"DROP KEYSPACE IF EXISTS {simple}")
    assert (
        session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (topology,)).one()
        is None
    )


def test_stop_and_start_again_on_the_same_data(cassandra_service: dict[str, str], stack_ctx: StackContext) -> None:
    """What the provisioning failure test does to it: stopped by the launcher, then started again."""
    service = stack.load("cassandra")
    keyspace = f"devstack_restart_{uuid.uuid4().hex[:12]}"
    cluster, session = _connect(cassandra_service)
    try:
        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'NetworkTopologyStrategy', '{DATACENTER}': 1}}"
        )
        session.execute(f"CREATE TABLE {keyspace}.t (k text PRIMARY KEY, v text)")
        session.execute(f"INSERT INTO {keyspace}.t (k, v) VALUES ('a', 'kept')")  # noqa: S608 - generated names
    finally:
        cluster.shutdown()

    assert service.stop(stack_ctx)
    assert not service.safe_healthy(stack_ctx)
    service.start(stack_ctx)
    assert service.safe_healthy(stack_ctx)

    cluster, session = _connect(cassandra_service)
    try:
        row = session.execute(f"SELECT v FROM {keyspace}.t WHERE k = 'a'").one()  # noqa: S608 - generated names
        assert row is not None and row.v == "kept"
        assert _replication(session, keyspace)[DATACENTER] == "1"
        session.execute(f"DROP KEYSPACE {keyspace}")
    finally:
        cluster.shutdown()
