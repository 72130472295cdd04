"""A thin adapter for the index, mapping and alias calls, so the search provisioner works with both
Elasticsearch and OpenSearch.

The REST calls are the same in both products. The official ``elasticsearch`` client only talks to servers
that send ``X-Elastic-Product: Elasticsearch`` (and, for the 9.x client, compatible with version 9), so:

* :class:`ElasticsearchClientAdapter` uses the official async client (Elasticsearch 9 servers);
* :class:`RestSearchAdapter` makes the same calls with aiohttp (OpenSearch, or any Elasticsearch version).

:func:`detect_adapter` asks ``GET /`` which product and version answers and picks one.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import elastic_transport
import elasticsearch
from elasticsearch import AsyncElasticsearch

from pipeline.provisioners._http import JsonHttp, basic_auth, path
from pipeline.provisioners.base import http_error
from pipeline.provisioners.errors import PermanentError, TransientError

logger = logging.getLogger(__name__)

AdapterChoice = Literal["auto", "elasticsearch-client", "rest"]


class SearchAdapter(Protocol):
    """The calls the search provisioner needs. Index and alias names are validated by the caller."""

    product: str

    async def get_index(self, index: str) -> dict[str, Any] | None:
        """``{"settings": ..., "mappings": ..., "aliases": ...}`` of ``index``, or None if it does not exist."""
        ...

    async def create_index(
        self, index: str, settings: dict[str, Any], mappings: dict[str, Any], aliases: list[str]
    ) -> bool:
        """Create ``index``; False if it already existed."""
        ...

    async def put_settings(self, index: str, settings: dict[str, Any]) -> None: ...

    async def put_mapping(self, index: str, mappings: dict[str, Any]) -> None: ...

    async def put_alias(self, index: str, alias: str) -> None: ...

    async def delete_index(self, index: str) -> bool:
        """Delete ``index``; False if it did not exist."""
        ...

    async def close(self) -> None: ...


def _index_body(raw: Any, index: str) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or index not in raw:
        return None
    body = raw[index]
    return {
        "settings": body.get("settings", {}),
        "mappings": body.get("mappings", {}),
        "aliases": body.get("aliases", {}),
    }


def _already_exists(data: Any) -> bool:
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and error.get("type") == "resource_already_exists_exception"


class RestSearchAdapter:
    """The index calls over plain HTTP (aiohttp): OpenSearch and Elasticsearch alike."""

    def __init__(self, url: str, *, product: str = "opensearch", timeout: float = 30.0,
                 username: str | None = None, password: str | None = None) -> None:
        headers = basic_auth(username, password or "") if username else None
        self._http = JsonHttp(url, resource="elasticsearch", headers=headers, timeout=timeout)
        self.product = product

    async def get_index(self, index: str) -> dict[str, Any] | None:
        response = await self._http.request("GET", path(index), expect=(200, 404))
        return _index_body(response.data, index) if response.status == 200 else None

    async def create_index(
        self, index: str, settings: dict[str, Any], mappings: dict[str, Any], aliases: list[str]
    ) -> bool:
        body = {"settings": settings, "mappings": mappings, "aliases": {alias: {} for alias in aliases}}
        response = await self._http.request("PUT", path(index), json_body=body, expect=(200, 400),
                                            what=f"create index {index}")
        if response.status == 400:
            if _already_exists(response.data):
                return False
            raise http_error("elasticsearch", 400, f"create index {index}", response.text)
        return True

    async def put_settings(self, index: str, settings: dict[str, Any]) -> None:
        await self._http.request("PUT", path(index, "_settings"), json_body=settings,
                                 what=f"update settings of {index}")

    async def put_mapping(self, index: str, mappings: dict[str, Any]) -> None:
        await self._http.request("PUT", path(index, "_mapping"), json_body=mappings,
                                 what=f"update mapping of {index}")

    async def put_alias(self, index: str, alias: str) -> None:
        await self._http.request("PUT", path(index, "_alias", alias), json_body={},
                                 what=f"alias {alias} -> {index}")

    async def delete_index(self, index: str) -> bool:
        response = await self._http.request("DELETE", path(index), expect=(200, 404), what=f"delete index {index}")
        return response.status == 200

    async def close(self) -> None:
        await self._http.close()


def _client_error(exc: Exception, what: str) -> Exception:
    if isinstance(exc, elasticsearch.ApiError):
        return http_error("elasticsearch", exc.status_code, what, str(exc.body)[:300])
    if isinstance(exc, elasticsearch.UnsupportedProductError):
        return PermanentError(f"{what}: {exc}", resource="elasticsearch")
    if isinstance(exc, elastic_transport.TransportError):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}", resource="elasticsearch")
    return exc


class ElasticsearchClientAdapter:
    """The index calls through the official async ``elasticsearch`` client."""

    product = "elasticsearch"

    def __init__(self, url: str, *, timeout: float = 30.0,
                 username: str | None = None, password: str | None = None) -> None:
        self._client = AsyncElasticsearch(
            url,
            request_timeout=timeout,
            max_retries=1,
            retry_on_timeout=False,
            basic_auth=(username, password or "") if username else None,
        )

    async def get_index(self, index: str) -> dict[str, Any] | None:
        try:
            response = await self._client.indices.get(index=index)
        except elasticsearch.NotFoundError:
            return None
        except Exception as exc:
            raise _client_error(exc, f"get index {index}") from exc
        return _index_body(response.body, index)

    async def create_index(
        self, index: str, settings: dict[str, Any], mappings: dict[str, Any], aliases: list[str]
    ) -> bool:
        try:
            await self._client.indices.create(
                index=index, settings=settings, mappings=mappings, aliases={alias: {} for alias in aliases}
            )
        except elasticsearch.BadRequestError as exc:
            if _already_exists(exc.body):
                return False
            raise _client_error(exc, f"create index {index}") from exc
        except Exception as exc:
            raise _client_error(exc, f"create index {index}") from exc
        return True

    async def put_settings(self, index: str, settings: dict[str, Any]) -> None:
        try:
            await self._client.indices.put_settings(index=index, settings=settings)
        except Exception as exc:
            raise _client_error(exc, f"update settings of {index}") from exc

    async def put_mapping(self, index: str, mappings: dict[str, Any]) -> None:
        try:
            await self._client.indices.put_mapping(index=index, body=mappings)
        except Exception as exc:
            raise _client_error(exc, f"update mapping of {index}") from exc

    async def put_alias(self, index: str, alias: str) -> None:
        try:
            await self._client.indices.put_alias(index=index, name=alias)
        except Exception as exc:
            raise _client_error(exc, f"alias {alias} -> {index}") from exc

    async def delete_index(self, index: str) -> bool:
        try:
            await self._client.indices.delete(index=index)
        except elasticsearch.NotFoundError:
            return False
        except Exception as exc:
            raise _client_error(exc, f"delete index {index}") from exc
        return True

    async def close(self) -> None:
        await self._client.close()


async def server_info(url: str, *, request_timeout: float = 10.0, username: str | None = None,
                      password: str | None = None) -> tuple[str, int]:
    """``(product, major version)`` of the search server at ``url``."""
    headers = basic_auth(username, password or "") if username else None
    http = JsonHttp(url, resource="elasticsearch", headers=headers, timeout=request_timeout)
    try:
        response = await http.request("GET", "/", what="server info")
    finally:
        await http.close()
    info: dict[str, Any] = response.data if isinstance(response.data, dict) else {}
    version: dict[str, Any] = info["version"] if isinstance(info.get("version"), dict) else {}
    number = str(version.get("number", "0"))
    try:
        major = int(number.split(".", 1)[0])
    except ValueError:
        major = 0
    if version.get("distribution") == "opensearch":
        return "opensearch", major
    if response.headers.get("X-Elastic-Product") == "Elasticsearch":
        return "elasticsearch", major
    return "unknown", major


async def detect_adapter(url: str, choice: AdapterChoice = "auto", *, request_timeout: float = 30.0,
                         username: str | None = None, password: str | None = None) -> SearchAdapter:
    """The adapter for the server at ``url``: the official client for Elasticsearch 9+, REST otherwise."""
    if choice == "elasticsearch-client":
        return ElasticsearchClientAdapter(url, timeout=request_timeout, username=username, password=password)
    if choice == "rest":
        product, _ = await server_info(url, username=username, password=password)
        return RestSearchAdapter(url, product=product, timeout=request_timeout, username=username, password=password)
    product, major = await server_info(url, username=username, password=password)
    client_major = int(str(getattr(elasticsearch, "__versionstr__", "9")).split(".", 1)[0])
    if product == "elasticsearch" and major >= client_major:
        logger.info("search server at %s is Elasticsearch %d: using the official client", url, major)
        return ElasticsearchClientAdapter(url, timeout=request_timeout, username=username, password=password)
    logger.info("search server at %s is %s %d: using the REST adapter", url, product, major)
    return RestSearchAdapter(url, product=product, timeout=request_timeout, username=username, password=password)
