"""Which worker of the group owns a tenant, and who the other workers are (for routing REST reads and calls).

Tables are keyed by JSON-encoded keys and topics by raw tenant ids: the partition that holds a tenant is the
one its events land on, so the owner is looked up by a source topic's key.
"""

from __future__ import annotations

from typing import Any

from yarl import URL


def is_this_worker(app: Any, url: URL) -> bool:
    """Whether ``url`` (an owner or member URL from the group's assignment) is this worker's.

    Both sides are advertised URLs: the assignment carries each member's ``canonical_url``, which
    ``pipeline/app.py`` sets to ``Settings.advertised_url()``, never the bind address; with a wildcard bind
    advertised, workers on the same port took each other for themselves.
    """
    mine = URL(str(app.conf.canonical_url))
    return (url.host, url.port) == (mine.host, mine.port)


def owner_of(app: Any, tenant_id: str, source_topic: Any) -> URL | None:
    """URL of the worker owning ``tenant_id``'s partition of ``source_topic`` (keyed by tenant id), or None
    when that is this worker (or the assignment is not known yet)."""
    try:
        owner: URL = app.router.external_topic_key_store(source_topic, tenant_id)
    except (KeyError, IndexError, TypeError):
        # TypeError: the producer's metadata does not have the topic yet (aiokafka iterates None): a worker that
        # started before the topic existed answered 500 to every tenant read until its metadata was refreshed.
        return None
    return None if is_this_worker(app, owner) else owner


def peer_urls(app: Any) -> list[URL]:
    """The web URLs of the other workers of the group."""
    return [url for url in (URL(str(host)) for host in app.router.tables_metadata()) if not is_this_worker(app, url)]
