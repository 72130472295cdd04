"""Cassandra: one keyspace per tenant with the tier's replication strategy and factor.

The keyspace is data-bearing: ``delete`` drops it only with ``purge``. CQL identifiers are validated names
quoted with the driver's own escaping; the replication map is encoded by the driver's CQL encoder; the
lookups bind their values as parameters.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import cassandra
from cassandra import protocol
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.encoder import Encoder
from cassandra.metadata import escape_name
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy

from pipeline.provisioners.base import (
    DeleteResult,
    ReconnectingProvisioner,
    ResourcePlan,
    TenantSpec,
    VerifyResult,
    blocking,
    diff,
)
from pipeline.provisioners.errors import PermanentError
from pipeline.provisioners.naming import TenantNames, check_cassandra_identifier
from pipeline.provisioners.tiers import TierConfig, TiersConfig

logger = logging.getLogger(__name__)

_TRANSIENT = (
    NoHostAvailable,
    cassandra.OperationTimedOut,
    cassandra.Unavailable,
    cassandra.ReadTimeout,
    cassandra.WriteTimeout,
    cassandra.CoordinationFailure,
    protocol.OverloadedErrorMessage,
    protocol.IsBootstrappingErrorMessage,
    protocol.ServerError,
)
_SELECT_KEYSPACE = "SELECT replication, durable_writes FROM system_schema.keyspaces WHERE keyspace_name = %s"


def _normalise_replication(replication: dict[str, str]) -> dict[str, str]:
    """Cassandra reports ``org.apache.cassandra.locator.SimpleStrategy``; the plan says ``SimpleStrategy``."""
    out = dict(replication)
    out["class"] = out.get("class", "").rsplit(".", 1)[-1]
    return out


class CassandraProvisioner(ReconnectingProvisioner):
    resource = "cassandra"
    data_bearing = True
    transient_exceptions = _TRANSIENT

    def __init__(
        self,
        tiers: TiersConfig,
        hosts: Sequence[str],
        port: int = 9042,
        *,
        username: str | None = None,
        password: str | None = None,
        local_dc: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__(tiers)
        if not hosts:
            raise PermanentError("no Cassandra hosts configured", resource=self.resource)
        self._hosts = list(hosts)
        self._port = port
        self.address = ",".join(f"{host}:{port}" for host in self._hosts)
        self._auth = PlainTextAuthProvider(username, password) if username else None
        self._local_dc = local_dc
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._lock = threading.Lock()
        self._cluster: Cluster | None = None
        self._session: Session | None = None

    # -- connection (lazy; dropped on failure, re-made on the next call) ----------------------------------

    def _connect(self) -> Session:
        with self._lock:
            if self._session is not None:
                return self._session
            profiles = {}
            if self._local_dc:
                policy = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self._local_dc))
                profiles[EXEC_PROFILE_DEFAULT] = ExecutionProfile(
                    load_balancing_policy=policy, request_timeout=self._request_timeout
                )
            cluster = Cluster(
                contact_points=self._hosts,
                port=self._port,
                auth_provider=self._auth,
                ssl_context=self._ssl_context,
                connect_timeout=self._connect_timeout,
                control_connection_timeout=self._connect_timeout,
                reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None),
                execution_profiles=profiles or None,  # type: ignore[arg-type]
            )
            try:
                session = cluster.connect()
            except Exception:
                cluster.shutdown()
                raise
            if not self._local_dc:
                session.default_timeout = self._request_timeout
            self._cluster, self._session = cluster, session
            return session

    def _disconnect(self) -> None:
        with self._lock:
            cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            try:
                cluster.shutdown()
            except Exception:  # shutting down a broken cluster object must not hide the real error
                logger.debug("cassandra cluster shutdown failed", exc_info=True)

    # -- the interface --------------------------------------------------------------------------------------

    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        return (
            {"keyspace": names.cassandra_keyspace},
            {
                "replication": tier.cassandra.replication(),
                "durable_writes": tier.cassandra.durable_writes,
            },
        )

    def _read(self, keyspace: str) -> dict[str, Any] | None:
        row = self._connect().execute(_SELECT_KEYSPACE, (keyspace,)).one()
        if row is None:
            return None
        return {"replication": _normalise_replication(dict(row.replication)), "durable_writes": row.durable_writes}

    @staticmethod
    def _ddl(verb: str, keyspace: str, settings: dict[str, Any]) -> str:
        replication = Encoder().cql_encode_all_types(settings["replication"])
        durable = "true" if settings["durable_writes"] else "false"
        target = "IF NOT EXISTS " if verb == "CREATE" else ""
        name = escape_name(check_cassandra_identifier(keyspace))
        return f"{verb} KEYSPACE {target}{name} WITH replication = {replication} AND durable_writes = {durable}"

    def _apply_sync(self, plan: ResourcePlan) -> None:
        keyspace = plan.names["keyspace"]
        current = self._read(keyspace)
        if current is None:
            self._connect().execute(self._ddl("CREATE", keyspace, plan.settings))
            logger.debug("created keyspace %s with %s", keyspace, plan.settings["replication"])
        elif diff(plan.settings, current):
            logger.warning(
                "keyspace %s has %s, altering to %s (run a repair after a replication change)",
                keyspace, current, plan.settings,
            )
            self._connect().execute(self._ddl("ALTER", keyspace, plan.settings))

    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan:
        await blocking(self._apply_sync, plan)
        return plan

    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult:
        keyspace = plan.names["keyspace"]
        current = await blocking(self._read, keyspace)
        if current is None:
            return self._verify_result(plan, exists=False, missing=[f"keyspace {keyspace}"])
        return self._verify_result(plan, exists=True, differences=diff(plan.settings, current))

    def _drop_sync(self, keyspace: str) -> bool:
        if self._read(keyspace) is None:
            return False
        self._connect().execute(f"DROP KEYSPACE IF EXISTS {escape_name(check_cassandra_identifier(keyspace))}")
        return True

    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult:
        keyspace = plan.names["keyspace"]
        item = f"keyspace {keyspace}"
        if not purge:
            exists = await blocking(self._read, keyspace) is not None
            return self._delete_result(plan, kept=[item] if exists else [], absent=[] if exists else [item])
        dropped = await blocking(self._drop_sync, keyspace)
        return self._delete_result(plan, deleted=[item] if dropped else [], absent=[] if dropped else [item])
