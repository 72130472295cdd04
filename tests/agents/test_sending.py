"""The agents' records go straight to the producer (not through Faust's Topic.send): the same bytes, in order,
and an event is acknowledged (its offset committable) only once Kafka acknowledged every record it produced."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.runtime import AgentRuntime
from pipeline.app import create_app
from pipeline.config import Settings
from pipeline.contract.topics import AUDIT_EVENTS, PROVISIONING_COMMANDS, PROVISIONING_EVENTS, TENANT_CREATED
from pipeline.events.models import AuditEvent, TenantCreated
from pipeline.faust_adapter import check_sends_are_immediate
from pipeline.outputs import Emit
from tests.agents.conftest import SetDedupe

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class FakeProducer:
    """Faust's producer interface: records each record handed over, and its future (resolved by the test)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: float | None, headers: Any) -> asyncio.Future[Any]:
        assert partition is None and timestamp is None and headers is None  # the partitioner picks by key
        self.records.append((topic, key, value))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    def acknowledge(self, first: int = 0, end: int | None = None) -> None:
        for fut in self.futures[first:end]:
            if not fut.done():
                fut.set_result(None)


class FakeMessage:
    def __init__(self, value: bytes, key: bytes = b"acme") -> None:
        self.value = value
        self.key = key
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


@pytest.fixture
def producer(io: AgentRuntime, monkeypatch: pytest.MonkeyPatch) -> FakeProducer:
    fake = FakeProducer()

    async def maybe_start_producer() -> FakeProducer:
        return fake

    monkeypatch.setattr(io.app, "maybe_start_producer", maybe_start_producer)
    return fake


def created(event_id: str, tenant_id: str = "acme") -> bytes:
    return json.dumps({"event_id": event_id, "tenant_id": tenant_id, "occurred_at": NOW.isoformat(),
                       "name": "Acme", "tier": "standard", "owner_user_id": "alice"}).encode()


def three_records(event: TenantCreated) -> list[Emit]:
    """Stands for the tenant-created handler: records on two topics, keyed by the tenant."""
    return [
        Emit(PROVISIONING_COMMANDS if n < 2 else PROVISIONING_EVENTS, event.tenant_id,
             AuditEvent(event_id=f"{event.event_id}-{n}", occurred_at=NOW, actor="test", action="x",
                        tenant_id=event.tenant_id, outcome="succeeded", detail={"n": n}))
        for n in range(3)
    ]


async def test_records_are_the_bytes_faust_topic_send_would_produce(io: AgentRuntime, producer: FakeProducer) -> None:
    emits = three_records(TenantCreated.model_validate_json(created("e1")))
    futures = await io.send_all(emits)
    assert len(futures) == 3 and not any(f.done() for f in futures)
    expected = []
    for e in emits:
        # What Topic.send would have handed to the producer for this record (its key and value preparation).
        message = io.topic(e.topic).as_future_message(key=e.key.encode(), value=e.value.model_dump_json().encode())
        expected.append((e.topic, message.message.key, message.message.value))
    assert producer.records == expected
    producer.acknowledge()
    assert all(f.done() and f.exception() is None for f in futures)


async def test_an_event_is_acknowledged_only_after_every_one_of_its_records_was(
    io: AgentRuntime, dedupe: SetDedupe, producer: FakeProducer,
) -> None:
    first, second = FakeMessage(created("e1")), FakeMessage(created("e2"))
    await io.process(first, TENANT_CREATED, TenantCreated, three_records)  # type: ignore[arg-type]
    await io.process(second, TENANT_CREATED, TenantCreated, three_records)  # type: ignore[arg-type]
    # 3 records and the audit record per event, handed over in the order the events came
    assert [(topic, key) for topic, key, _ in producer.records] == [
        (PROVISIONING_COMMANDS, b"acme"), (PROVISIONING_COMMANDS, b"acme"), (PROVISIONING_EVENTS, b"acme"),
        (AUDIT_EVENTS, b"acme"),
    ] * 2
    assert [json.loads(v)["event_id"] for _, _, v in producer.records[:3]] == ["e1-0", "e1-1", "e1-2"]
    marks = io.pending_marks(TENANT_CREATED)

    producer.acknowledge(0, 3)  # all but e1's audit record, and none of e2's
    marks.settle()
    assert not first.acked and not second.acked and dedupe.keys == set()

    producer.acknowledge(4, 8)  # e2's records: e2 still waits behind e1
    marks.settle()
    assert not first.acked and not second.acked

    producer.acknowledge(3, 4)
    marks.settle()
    assert first.acked and second.acked and len(dedupe.keys) == 2

    # a redelivery is recognised and sends nothing again
    again = FakeMessage(created("e1"))
    await io.process(again, TENANT_CREATED, TenantCreated, three_records)  # type: ignore[arg-type]
    assert again.acked and len(producer.records) == 8


async def test_a_record_kafka_refuses_leaves_its_event_and_the_later_ones_unacknowledged(
    io: AgentRuntime, dedupe: SetDedupe, producer: FakeProducer,
) -> None:
    first, second = FakeMessage(created("e1")), FakeMessage(created("e2", "beta"), b"beta")
    await io.process(first, TENANT_CREATED, TenantCreated, three_records)  # type: ignore[arg-type]
    await io.process(second, TENANT_CREATED, TenantCreated, three_records)  # type: ignore[arg-type]
    producer.futures[1].set_exception(RuntimeError("not enough replicas"))
    producer.acknowledge()
    with pytest.raises(RuntimeError, match="not enough replicas"):
        io.pending_marks(TENANT_CREATED).settle()
    assert not first.acked and not second.acked and dedupe.keys == set()  # both come again after a restart


async def test_a_dead_letter_goes_to_the_producer_and_is_waited_for(io: AgentRuntime, producer: FakeProducer) -> None:
    message = FakeMessage(b"{not json")
    task = asyncio.ensure_future(
        io.process(message, TENANT_CREATED, TenantCreated, three_records))  # type: ignore[arg-type]
    for _ in range(1000):  # until it hands the dead letter over (a few loop turns)
        if producer.records or task.done():
            break
        await asyncio.sleep(0)
    assert not task.done() and not message.acked  # waits for Kafka's acknowledgement of the dead letter
    producer.acknowledge()
    await task
    ((topic, key, value),) = producer.records
    assert topic == io.settings.dead_letter_topic and key == b"acme" and json.loads(value)["reason"]
    assert message.acked


def test_an_app_that_holds_records_until_the_commit_is_refused() -> None:
    check_sends_are_immediate(create_app(Settings()))  # the worker's configuration
    app = create_app(Settings())
    app.conf.stream_publish_on_commit = True
    with pytest.raises(RuntimeError, match="stream_publish_on_commit"):
        AgentRuntime(app, SetDedupe())
