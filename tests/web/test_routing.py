"""Owner and peer lookup from the Faust router's view of the group."""

from __future__ import annotations

from typing import Any

from yarl import URL

from web.routing import owner_of, peer_urls

ME, OTHER = "http://127.0.0.1:6066", "http://127.0.0.1:6067"


class FakeRouter:
    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners

    def external_topic_key_store(self, _topic: Any, key: str) -> URL:
        if key == "umbrella":  # what aiokafka raises while its metadata lacks the topic
            raise TypeError("'NoneType' object is not iterable")
        return URL(self.owners[key])  # KeyError: the assignment is not known yet

    def tables_metadata(self) -> dict[str, Any]:
        return {ME: {}, OTHER: {}}


class FakeApp:
    def __init__(self, owners: dict[str, str]) -> None:
        self.router = FakeRouter(owners)
        self.conf = type("Conf", (), {"canonical_url": URL(ME)})()


def test_a_tenant_owned_here_has_no_owner_to_route_to_and_others_do() -> None:
    app = FakeApp({"acme": ME, "globex": OTHER})
    assert owner_of(app, "acme", "tenant-created-events") is None
    assert owner_of(app, "globex", "tenant-created-events") == URL(OTHER)
    assert owner_of(app, "initech", "tenant-created-events") is None  # not assigned yet: answered here
    assert owner_of(app, "umbrella", "tenant-created-events") is None  # the topic not in the metadata yet: same


def test_peers_are_the_other_workers() -> None:
    assert peer_urls(FakeApp({})) == [URL(OTHER)]
