"""The Kafka topics' creation: settings, and several workers creating or growing them at once (a fake admin
client; tests/pipeline/test_partition_guard.py runs it on the real Kafka)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import InvalidPartitionsError

import pipeline.bridge.topics as topics_module
from pipeline.bridge.topics import DESCRIBE_ATTEMPTS, TopicAdministrationFailed, ensure_kafka_topics, new_topic
from pipeline.config import Settings


def test_topics_are_created_with_the_replication_settings() -> None:

    default = new_topic(Settings(), "tenant-created-events")
    assert (default.name, default.num_partitions, default.replication_factor, default.topic_configs) == (
        "tenant-created-events", 4, 1, {})  # as before the settings: one replica, the broker's min ISR
    ha = new_topic(Settings(topic_partitions=12, topic_replication_factor=3, topic_min_insync_replicas=2), "x")
    assert (ha.num_partitions, ha.replication_factor, ha.topic_configs) == (12, 3, {"min.insync.replicas": "2"})


# -- topic creation by several workers at once (fake admin client) ------------------------------------------


class _CreateResponse:
    def __init__(self, *topic_errors: tuple[Any, ...]) -> None:
        self.topic_errors = list(topic_errors)


class FakeAdmin:
    """An admin client over a scripted cluster: ``settling`` topics are described with an error code, then with
    no partitions, before their real entry, as Kafka does for a topic another worker has just created."""

    def __init__(self, partitions: dict[str, int], settling: set[str], create_errors: dict[str, int]) -> None:
        self.partitions = partitions
        self.settling = {name: [(5, 0), (0, 0)] for name in settling}  # (error code, partitions) before settling
        self.create_errors = create_errors
        self.grown: list[dict[str, int]] = []
        self.describes = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return list(self.partitions)

    async def create_topics(self, new_topics: list[Any]) -> _CreateResponse:
        for topic in new_topics:
            if not self.create_errors.get(topic.name):
                self.partitions.setdefault(topic.name, topic.num_partitions)
        return _CreateResponse(*((t.name, self.create_errors.get(t.name, 0), None) for t in new_topics))

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        self.describes += 1
        described = []
        for name in names:
            early = self.settling.get(name)
            code, count = early.pop(0) if early else (0, self.partitions[name])
            partitions = [{"partition": p} for p in range(count)]
            described.append({"topic": name, "error_code": code, "partitions": partitions})
        return described

    async def create_partitions(self, wanted: dict[str, Any]) -> None:
        for name, new in wanted.items():
            if self.partitions[name] == new.total_count:
                raise InvalidPartitionsError(f"Could not create partitions for {name}: Topic already has "
                                             f"{new.total_count} partitions.")
        self.grown.append({name: new.total_count for name, new in wanted.items()})
        self.partitions.update({name: new.total_count for name, new in wanted.items()})


async def _no_records(_settings: Any, _partitions: Any) -> set[str]:
    return set()


def _with_admin(monkeypatch: pytest.MonkeyPatch, admin: FakeAdmin) -> None:
    monkeypatch.setattr(topics_module, "AIOKafkaAdminClient", lambda **_kwargs: admin)
    monkeypatch.setattr(topics_module, "_holding_records", _no_records)
    monkeypatch.setattr(topics_module, "DESCRIBE_PAUSE_S", 0.0)


async def test_a_topic_another_worker_is_creating_is_waited_for_not_grown(monkeypatch: pytest.MonkeyPatch) -> None:
    # Listed (the other worker created it), then described with an error code, then with no partitions.
    admin = FakeAdmin({"orders": 4}, settling={"orders"}, create_errors={})
    _with_admin(monkeypatch, admin)

    await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])

    assert admin.grown == [] and admin.describes == 3


async def test_an_existing_topic_at_creation_is_fine_and_other_refusals_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    # The other worker created "orders" between our listing and our creation: TOPIC_ALREADY_EXISTS (36).
    admin = FakeAdmin({}, settling=set(), create_errors={"orders": 36})
    admin.partitions["orders"] = 4
    admin.list_topics = _listing_nothing  # type: ignore[method-assign]
    _with_admin(monkeypatch, admin)
    await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])

    refusing = FakeAdmin({}, settling=set(), create_errors={"orders": 38})  # INVALID_REPLICATION_FACTOR
    _with_admin(monkeypatch, refusing)
    with pytest.raises(TopicAdministrationFailed, match="orders: INVALID_REPLICATION_FACTOR"):
        await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])


async def _listing_nothing() -> list[str]:
    return []


async def test_growing_a_topic_another_worker_just_grew_is_success(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin({"orders": 2}, settling=set(), create_errors={})
    real_create_partitions = admin.create_partitions

    async def grown_by_the_other_worker_first(wanted: dict[str, Any]) -> None:
        admin.partitions["orders"] = 4
        await real_create_partitions(wanted)

    admin.create_partitions = grown_by_the_other_worker_first  # type: ignore[method-assign]
    _with_admin(monkeypatch, admin)

    await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])

    assert admin.partitions == {"orders": 4} and admin.grown == []


async def test_a_topic_that_never_settles_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin({"orders": 4}, settling={"orders"}, create_errors={})
    admin.settling["orders"] = [(5, 0)] * (DESCRIBE_ATTEMPTS + 1)
    _with_admin(monkeypatch, admin)

    with pytest.raises(TopicAdministrationFailed, match="orders"):
        await ensure_kafka_topics(Settings(topic_partitions=4), ["orders"])
