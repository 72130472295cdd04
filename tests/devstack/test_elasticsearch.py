"""The real local Elasticsearch node serves what the search provisioner needs, through the official client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from elasticsearch import BadRequestError, Elasticsearch

pytestmark = pytest.mark.integration


@pytest.fixture
def es(elasticsearch_service: dict[str, str]) -> Iterator[Elasticsearch]:
    client = Elasticsearch(elasticsearch_service["ELASTICSEARCH_HOST"], request_timeout=30)
    try:
        yield client
    finally:
        client.close()


def test_the_official_client_accepts_the_server(es: Elasticsearch) -> None:
    # The client refuses a server without the X-Elastic-Product header; info() and ping() need GET/HEAD /.
    assert es.ping()
    info = es.info()
    assert info["version"]["number"].startswith("9.")
    assert info["cluster_name"] == "devstack"
    assert es.cluster.health(wait_for_status="yellow", timeout="30s")["status"] in ("yellow", "green")


def test_index_with_mappings_and_alias_is_searchable(es: Elasticsearch) -> None:
    run = uuid.uuid4().hex[:12]
    index, alias = f"devstack-test-{run}", f"devstack-test-{run}-alias"
    mappings = {
        "dynamic": "strict",
        "properties": {
            "tenant": {"type": "keyword"},
            "title": {"type": "text"},
            "created": {"type": "date"},
            "size": {"type": "long"},
        },
    }
    es.indices.create(
        index=index,
        settings={"number_of_shards": 2, "number_of_replicas": 0},
        mappings=mappings,
        aliases={alias: {"is_write_index": True}},
    )
    try:
        es.index(
            index=alias,
            id="doc-1",
            document={"tenant": "t-1", "title": "Quarterly usage report", "created": "2026-01-31", "size": 42},
            refresh="wait_for",
        )
        hits = es.search(index=alias, query={"match": {"title": "usage"}})["hits"]
        assert hits["total"]["value"] == 1
        assert hits["hits"][0]["_id"] == "doc-1"
        assert hits["hits"][0]["_index"] == index

        assert es.indices.get_mapping(index=index)[index]["mappings"] == mappings
        assert es.indices.get_alias(name=alias).body == {index: {"aliases": {alias: {"is_write_index": True}}}}
        settings = es.indices.get_settings(index=index)[index]["settings"]["index"]
        assert (settings["number_of_shards"], settings["number_of_replicas"]) == ("2", "0")
        # A strict mapping really refuses an unknown field.
        with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
            es.index(index=alias, document={"tenant": "t-1", "unknown": 1})
    finally:
        es.indices.delete(index=index)
    assert not es.indices.exists(index=index)
    assert not es.indices.exists_alias(name=alias)


def test_index_template_applies_to_new_indices(es: Elasticsearch) -> None:
    run = uuid.uuid4().hex[:12]
    template, index = f"devstack-test-{run}", f"devstack-tpl-{run}-1"
    es.indices.put_index_template(
        name=template,
        index_patterns=[f"devstack-tpl-{run}-*"],
        template={"settings": {"number_of_shards": 1}, "mappings": {"properties": {"tenant": {"type": "keyword"}}}},
    )
    try:
        es.indices.create(index=index)
        assert es.indices.get_mapping(index=index)[index]["mappings"]["properties"]["tenant"] == {"type": "keyword"}
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
        es.indices.delete_index_template(name=template)
