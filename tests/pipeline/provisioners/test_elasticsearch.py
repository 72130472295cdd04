"""The search provisioner: state comparison, and against the local search server (Elasticsearch or
OpenSearch, whichever the stack runs), through each adapter that server supports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from elasticsearch import AsyncElasticsearch

from pipeline.provisioners.base import TenantSpec
from pipeline.provisioners.elasticsearch import ElasticsearchProvisioner, index_state
from pipeline.provisioners.errors import DriftError
from pipeline.provisioners.search import server_info
from pipeline.provisioners.tiers import TiersConfig
from tests.pipeline.provisioners.conftest import (
    applied,
    assert_deletes_only_this_tenant,
    assert_kept_without_purge,
    deleted_after,
    settings_from,
)


def test_index_state_reads_the_get_index_body() -> None:
    body = {"settings": {"index": {"number_of_shards": "2", "number_of_replicas": "0", "refresh_interval": "5s"}},
            "mappings": {"properties": {"title": {"type": "text"}}}, "aliases": {"tenant-acme": {}}}
    assert index_state(body) == {"shards": 2, "replicas": 0, "refresh_interval": "5s",
                                 "mappings": {"properties": {"title": {"type": "text"}}}, "aliases": ["tenant-acme"]}


# -- against the real server -------------------------------------------------------------------------------


class Server:
    """Reads the server's state with its own client: the official client for Elasticsearch, REST otherwise."""

    def __init__(self, url: str, product: str, major: int) -> None:
        self.url, self.product, self.major = url.rstrip("/"), product, major

    async def index(self, index: str) -> dict[str, Any] | None:
        if self.product == "elasticsearch" and self.major >= 9:
            async with AsyncElasticsearch(self.url) as es:
                if not (await es.indices.exists(index=index)):
                    return None
                body: dict[str, Any] = (await es.indices.get(index=index)).body[index]
                return body
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/{index}") as response:
            if response.status == 404:
                return None
            assert response.status == 200
            data: dict[str, Any] = (await response.json())[index]
            return data

    async def call(self, method: str, path: str, body: Any = None) -> int:
        async with aiohttp.ClientSession() as session, session.request(method, self.url + path, json=body) as r:
            return r.status


@pytest.fixture(scope="module")
async def server(elasticsearch_service: dict[str, str]) -> Server:
    url = settings_from(elasticsearch_service).elasticsearch_host
    product, major = await server_info(url)
    assert product in {"elasticsearch", "opensearch"}
    return Server(url, product, major)


@pytest.fixture(params=["auto", "rest"])
async def provisioner(
    request: pytest.FixtureRequest, elasticsearch_service: dict[str, str], tiers: TiersConfig
) -> AsyncIterator[ElasticsearchProvisioner]:
    built = ElasticsearchProvisioner(tiers, settings_from(elasticsearch_service).elasticsearch_host,
                                     adapter=request.param)
    yield built
    await built.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("tier", ["free", "enterprise"])
async def test_apply_creates_the_index_with_mappings_and_alias(
    provisioner: ElasticsearchProvisioner, server: Server, make_tenant: Callable[..., TenantSpec],
    tiers: TiersConfig, tier: str,
) -> None:
    tenant = make_tenant(tier)
    names = tenant.names()
    config = tiers.tier(tier).elasticsearch
    async with deleted_after(provisioner, tenant):
        plan = await provisioner.apply(tenant)
        assert plan.settings["product"] == server.product
        body = await server.index(names.elasticsearch_index)
        assert body is not None
        settings = body["settings"]["index"]
        assert int(settings["number_of_shards"]) == config.shards
        assert int(settings["number_of_replicas"]) == config.replicas
        assert settings["refresh_interval"] == config.refresh_interval
        assert body["mappings"]["properties"] == config.mappings["properties"]
        assert list(body["aliases"]) == [names.elasticsearch_alias]
        # Searchable through the alias.
        assert await server.call("POST", f"/{names.elasticsearch_alias}/_doc?refresh=true",
                                 {"tenant_id": tenant.tenant_id, "title": "hello"}) == 201
        assert await provisioner.apply(tenant) == plan  # twice: no error, same result
        assert (await provisioner.verify(tenant)).ok


@pytest.mark.integration
async def test_verify_detects_drift_and_apply_repairs_it(
    provisioner: ElasticsearchProvisioner, server: Server, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("standard")
    names = tenant.names()
    async with applied(provisioner, tenant):
        assert await server.call("DELETE", f"/{names.elasticsearch_index}/_alias/{names.elasticsearch_alias}") == 200
        assert await server.call("PUT", f"/{names.elasticsearch_index}/_settings",
                                 {"index": {"refresh_interval": "30s"}}) == 200
        drift = await provisioner.verify(tenant)
        assert drift.exists and drift.missing == [f"alias {names.elasticsearch_alias}"]
        assert [d.path for d in drift.differences] == ["refresh_interval"]
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok

        assert await server.call("DELETE", f"/{names.elasticsearch_index}") == 200
        gone = await provisioner.verify(tenant)
        assert not gone.exists and gone.drifted
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok


@pytest.mark.integration
async def test_a_different_shard_count_is_drift_apply_refuses_to_fix(
    provisioner: ElasticsearchProvisioner, server: Server, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("enterprise")  # 2 shards
    names = tenant.names()
    async with deleted_after(provisioner, tenant):
        assert await server.call("PUT", f"/{names.elasticsearch_index}",
                                 {"settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}}}) == 200
        drift = await provisioner.verify(tenant)
        assert "shards" in {d.path for d in drift.differences}
        with pytest.raises(DriftError):
            await provisioner.apply(tenant)


@pytest.mark.integration
async def test_delete_keeps_the_index_unless_purge(
    provisioner: ElasticsearchProvisioner, server: Server, make_tenant: Callable[..., TenantSpec]
) -> None:
    async def indices(of: TenantSpec) -> int:
        return 0 if await server.index(of.names().elasticsearch_index) is None else 1

    tenant, other = make_tenant(), make_tenant()
    names = tenant.names()
    item = f"index {names.elasticsearch_index} (alias {names.elasticsearch_alias})"
    async with applied(provisioner, tenant, other):
        await assert_kept_without_purge(provisioner, tenant, item, indices)
        await assert_deletes_only_this_tenant(provisioner, tenant, other, [item], indices, purge=True)
