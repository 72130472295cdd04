"""Elasticsearch / OpenSearch: one index per tenant with the tier's shards, replicas and mappings, and an
alias (the name applications use; the index behind it can later be swapped by a reindex).

The index is data-bearing: ``delete`` removes it (and so its alias) only with ``purge``. All calls go through
a :class:`~pipeline.provisioners.search.SearchAdapter`, picked from the server's product and version
unless given.

``apply`` converges what the server can change in place (replicas, refresh interval, added mapping fields,
the alias); a different shard count cannot be changed in place and raises
:class:`~pipeline.provisioners.errors.DriftError`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pipeline.provisioners.base import (
    BaseProvisioner,
    DeleteResult,
    ResourcePlan,
    TenantSpec,
    VerifyResult,
    diff,
)
from pipeline.provisioners.errors import DriftError, TransientError
from pipeline.provisioners.naming import TenantNames, check_index_name
from pipeline.provisioners.search import AdapterChoice, SearchAdapter, detect_adapter
from pipeline.provisioners.tiers import TierConfig, TiersConfig

logger = logging.getLogger(__name__)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def index_state(body: dict[str, Any]) -> dict[str, Any]:
    """The comparable state of an index from its ``GET /<index>`` body."""
    index_settings = body.get("settings", {}).get("index", {})
    return {
        "shards": _int(index_settings.get("number_of_shards")),
        "replicas": _int(index_settings.get("number_of_replicas")),
        "refresh_interval": index_settings.get("refresh_interval"),
        "mappings": body.get("mappings", {}),
        "aliases": sorted(body.get("aliases", {})),
    }


class ElasticsearchProvisioner(BaseProvisioner):
    resource = "elasticsearch"
    data_bearing = True

    def __init__(
        self,
        tiers: TiersConfig,
        url: str,
        *,
        adapter: AdapterChoice | SearchAdapter = "auto",
        timeout: float = 30.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(tiers)
        self._url = url
        self.address = url
        self._choice: AdapterChoice = adapter if isinstance(adapter, str) else "auto"
        self._adapter: SearchAdapter | None = None if isinstance(adapter, str) else adapter
        self._timeout = timeout
        self._username = username
        self._password = password
        self._adapter_lock: asyncio.Lock | None = None

    async def adapter(self) -> SearchAdapter:
        """The adapter in use (detected on first use)."""
        if self._adapter is None:
            if self._adapter_lock is None:
                self._adapter_lock = asyncio.Lock()
            async with self._adapter_lock:
                if self._adapter is None:
                    self._adapter = await detect_adapter(
                        self._url, self._choice, request_timeout=self._timeout,
                        username=self._username, password=self._password,
                    )
        return self._adapter

    async def aclose(self) -> None:
        if self._adapter is not None:
            await self._adapter.close()
            self._adapter = None

    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        search = tier.elasticsearch
        return (
            {"index": names.elasticsearch_index, "alias": names.elasticsearch_alias},
            {
                "shards": search.shards,
                "replicas": search.replicas,
                "refresh_interval": search.refresh_interval,
                "mappings": search.mappings,
                "aliases": [names.elasticsearch_alias],
            },
        )

    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan:
        adapter = await self.adapter()
        index, alias = check_index_name(plan.names["index"]), check_index_name(plan.names["alias"])
        want = plan.settings
        body = await adapter.get_index(index)
        if body is None:
            created = await adapter.create_index(
                index,
                {"index": {
                    "number_of_shards": want["shards"],
                    "number_of_replicas": want["replicas"],
                    "refresh_interval": want["refresh_interval"],
                }},
                want["mappings"],
                [alias],
            )
            if created:
                logger.debug("created index %s (alias %s) on %s", index, alias, adapter.product)
            body = await adapter.get_index(index)
            if body is None:
                raise TransientError(f"index {index} not found right after creation")
        have = index_state(body)
        if have["shards"] != want["shards"]:
            raise DriftError(
                f"index {index} has {have['shards']} shards, the plan wants {want['shards']}; the shard count "
                "cannot change in place: reindex, or delete with purge and apply again",
                resource=self.resource,
            )
        updates: dict[str, Any] = {}
        if have["replicas"] != want["replicas"]:
            updates["number_of_replicas"] = want["replicas"]
        if have["refresh_interval"] != want["refresh_interval"]:
            updates["refresh_interval"] = want["refresh_interval"]
        if updates:
            await adapter.put_settings(index, {"index": updates})
        if diff(want["mappings"], have["mappings"]):
            await adapter.put_mapping(index, want["mappings"])  # additive; a changed field type is refused
        if alias not in have["aliases"]:
            await adapter.put_alias(index, alias)
        return plan.model_copy(update={"settings": {**want, "product": adapter.product}})

    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult:
        adapter = await self.adapter()
        index, alias = plan.names["index"], plan.names["alias"]
        body = await adapter.get_index(index)
        if body is None:
            return self._verify_result(plan, exists=False, missing=[f"index {index}", f"alias {alias}"])
        have = index_state(body)
        want = {key: value for key, value in plan.settings.items() if key != "aliases"}
        missing = [] if alias in have["aliases"] else [f"alias {alias}"]
        return self._verify_result(plan, exists=True, missing=missing, differences=diff(want, have))

    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult:
        adapter = await self.adapter()
        index = check_index_name(plan.names["index"])
        item = f"index {index} (alias {plan.names['alias']})"
        if not purge:
            exists = await adapter.get_index(index) is not None
            return self._delete_result(plan, kept=[item] if exists else [], absent=[] if exists else [item])
        deleted = await adapter.delete_index(index)
        return self._delete_result(plan, deleted=[item] if deleted else [], absent=[] if deleted else [item])
