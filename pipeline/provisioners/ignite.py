"""Apache Ignite: one cache per tenant with the tier's cache mode, backups and atomicity (thin client).

Ignite cannot change a cache's configuration in place: ``apply`` creates a missing cache and raises a
:class:`~pipeline.provisioners.errors.DriftError` for one that exists with another configuration (a human
decides whether to re-create it). The cache holds no durable data here (in-memory data region), so it is
not data-bearing: ``delete`` destroys it.

Tenant caches of one configuration share a *cache group* (``cache_group`` in the plan, e.g.
``tenants_partitioned_atomic_b1``). A cache outside a group has partitions of its own (1024 by default),
which cost several MB of off-heap memory per node even when empty: the local node's 256 MB region held about
40 tenant caches before Ignite halted the JVM on ``IgniteOutOfMemoryException``. In a group the partitions
are shared, and a tenant cache costs little. The group is placement, not configuration: it is set when the
cache is created and not compared by ``verify`` (a cache made before groups stays valid).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pyignite import Client
from pyignite.datatypes.cache_config import CacheAtomicityMode, CacheMode
from pyignite.datatypes.prop_codes import (
    PROP_BACKUPS_NUMBER,
    PROP_CACHE_ATOMICITY_MODE,
    PROP_CACHE_MODE,
    PROP_GROUP_NAME,
    PROP_NAME,
)
from pyignite.exceptions import CacheError, ReconnectError, SocketError

from pipeline.provisioners.base import (
    DeleteResult,
    ReconnectingProvisioner,
    ResourcePlan,
    TenantSpec,
    VerifyResult,
    blocking,
    diff,
)
from pipeline.provisioners.errors import BackendUnavailable, DriftError
from pipeline.provisioners.naming import TenantNames, check_ignite_cache_name
from pipeline.provisioners.tiers import TierConfig, TiersConfig

logger = logging.getLogger(__name__)

_MODES = {"PARTITIONED": CacheMode.PARTITIONED, "REPLICATED": CacheMode.REPLICATED}
_ATOMICITY = {"ATOMIC": CacheAtomicityMode.ATOMIC, "TRANSACTIONAL": CacheAtomicityMode.TRANSACTIONAL}


#: Plan settings that are not compared with the cache's configuration (see the module docstring).
_PLACEMENT = ("cache_group",)


def cache_group(settings: dict[str, Any]) -> str:
    """The cache group of tenant caches with these settings (all caches of a group share mode and backups).

    Tenant cache names are ``tenant_<id>``; group names start ``tenants_``, so the two never collide.
    """
    parts = ["tenants", settings["cache_mode"].lower(), settings["atomicity"].lower()]
    if "backups" in settings:
        parts.append(f"b{settings['backups']}")
    return check_ignite_cache_name("_".join(parts))


def _compared(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key not in _PLACEMENT}


def _name_of(value: int, table: dict[str, int]) -> str | int:
    for name, code in table.items():
        if code == value:
            return name
    return value


class IgniteProvisioner(ReconnectingProvisioner):
    resource = "ignite"
    data_bearing = False
    transient_exceptions = (ReconnectError, SocketError)

    def __init__(self, tiers: TiersConfig, host: str, port: int = 10800, *, timeout: float = 10.0,
                 username: str | None = None, password: str | None = None) -> None:
        super().__init__(tiers)
        self._host = host
        self._port = port
        self.address = f"{host}:{port}"
        self._timeout = timeout
        self._credentials = {"username": username, "password": password} if username else {}
        self._lock = threading.RLock()  # the thin client is not thread-safe: one call at a time
        self._client: Client | None = None

    # -- connection ---------------------------------------------------------------------------------------------

    def _connect(self) -> Client:
        if self._client is None:
            client = Client(timeout=self._timeout, **self._credentials)
            try:
                client.connect(self._host, self._port)
            except ReconnectError as exc:
                # pyignite raises this, without a cause, when no node accepted the connection (a handshake
                # refused by a reachable node is a different error).
                raise BackendUnavailable(f"cannot connect: {exc}", resource=self.resource,
                                         address=self.address) from exc
            self._client = client
        return self._client

    def _disconnect(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                try:
                    client.close()
                except Exception:
                    logger.debug("ignite client close failed", exc_info=True)

    # -- plan ---------------------------------------------------------------------------------------------------

    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        ignite = tier.ignite
        settings: dict[str, Any] = {"cache_mode": ignite.cache_mode, "atomicity": ignite.atomicity}
        if ignite.cache_mode == "PARTITIONED":  # a REPLICATED cache has a copy on every node instead
            settings["backups"] = ignite.backups
        settings["cache_group"] = cache_group(settings)
        return {"cache": names.ignite_cache}, settings

    # -- reading ------------------------------------------------------------------------------------------------

    def _read(self, cache_name: str) -> dict[str, Any] | None:
        with self._lock:
            client = self._connect()
            if cache_name not in client.get_cache_names():
                return None
            try:
                config = client.get_cache(cache_name).settings or {}
            except CacheError:
                if cache_name not in client.get_cache_names():  # destroyed between the two calls
                    return None
                raise
        state: dict[str, Any] = {
            "cache_mode": _name_of(config.get(PROP_CACHE_MODE, -1), _MODES),
            "atomicity": _name_of(config.get(PROP_CACHE_ATOMICITY_MODE, -1), _ATOMICITY),
        }
        if state["cache_mode"] == "PARTITIONED":
            state["backups"] = config.get(PROP_BACKUPS_NUMBER)
        return state

    # -- the interface ------------------------------------------------------------------------------------------

    def _apply_sync(self, plan: ResourcePlan) -> None:
        cache_name = check_ignite_cache_name(plan.names["cache"])
        current = self._read(cache_name)
        if current is not None:
            wanted = _compared(plan.settings)
            if diff(wanted, current):
                raise DriftError(
                    f"cache {cache_name} exists with {current}, the plan wants {wanted}; Ignite cannot "
                    "change a cache's configuration: delete it with purge and apply again",
                    resource=self.resource,
                )
            return
        settings: dict[int, Any] = {
            PROP_NAME: cache_name,
            PROP_GROUP_NAME: plan.settings["cache_group"],
            PROP_CACHE_MODE: _MODES[plan.settings["cache_mode"]],
            PROP_CACHE_ATOMICITY_MODE: _ATOMICITY[plan.settings["atomicity"]],
        }
        if "backups" in plan.settings:
            settings[PROP_BACKUPS_NUMBER] = plan.settings["backups"]
        with self._lock:
            self._connect().get_or_create_cache(settings)
        logger.debug("created ignite cache %s with %s", cache_name, plan.settings)

    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan:
        await blocking(self._apply_sync, plan)
        return plan

    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult:
        cache_name = plan.names["cache"]
        current = await blocking(self._read, cache_name)
        if current is None:
            return self._verify_result(plan, exists=False, missing=[f"cache {cache_name}"])
        return self._verify_result(plan, exists=True, differences=diff(_compared(plan.settings), current))

    def _destroy_sync(self, cache_name: str, purge: bool) -> str:
        with self._lock:
            client = self._connect()
            if cache_name not in client.get_cache_names():
                return "absent"
            cache = client.get_cache(cache_name)
            if not purge and cache.get_size() > 0:
                return "kept"
            cache.destroy()
            return "deleted"

    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult:
        """An empty cache is destroyed; one holding entries only with ``purge`` (a tenant deleted without purge
        keeps what it stored, like its keyspace)."""
        cache_name = check_ignite_cache_name(plan.names["cache"])
        outcome = await blocking(self._destroy_sync, cache_name, purge)
        return self._delete_result(plan, **{outcome: [f"cache {cache_name}"]})
