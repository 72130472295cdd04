"""Events from the platform are audited like REST writes: one record per handled event, with its outcome."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.runtime import AgentRuntime
from pipeline.contract.topics import AUDIT_EVENTS, PROVISIONING_EVENTS, RESOURCE_METRICS, TENANT_CREATED
from pipeline.event_audit import EVENT_ACTIONS, audit_emit
from pipeline.events.models import AuditEvent, ProvisioningStatusEvent, TenantCreated
from pipeline.outputs import Emit, Refused

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class FakeMessage:
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.key = b"acme"
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


def created(event_id: str = "evt-1") -> bytes:
    return json.dumps({"event_id": event_id, "tenant_id": "acme", "occurred_at": NOW.isoformat(),
                       "name": "Acme", "tier": "standard", "owner_user_id": "alice"}).encode()


@pytest.fixture
def sent(io: AgentRuntime, monkeypatch: pytest.MonkeyPatch) -> list[Emit]:
    """What ``io`` hands to Kafka (acknowledged at once), and its dead letters as (topic, reason)."""
    records: list[Emit] = []

    async def send_all(emits: list[Emit]) -> list[asyncio.Future[Any]]:
        records.extend(emits)
        futures = []
        for _ in emits:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            futures.append(done)
        return futures

    async def dead_letter(source_topic: str, raw: Any, key: Any, reason: str, detail: str) -> None:
        records.append(Emit("dead-letter-events", "acme", Refused(reason, detail)))  # type: ignore[arg-type]

    monkeypatch.setattr(io, "send_all", send_all)
    monkeypatch.setattr(io, "dead_letter", dead_letter)
    return records


def audits(records: list[Emit]) -> list[AuditEvent]:
    return [e.value for e in records if e.topic == AUDIT_EVENTS]  # type: ignore[misc]


def status(tenant_id: str) -> Emit:
    return Emit(PROVISIONING_EVENTS, tenant_id, ProvisioningStatusEvent(
        event_id="s", tenant_id=tenant_id, occurred_at=NOW, kind="resource-status", resource="s3", status="pending"))


async def test_a_handled_event_is_audited_as_succeeded_with_its_record_count(
    io: AgentRuntime, sent: list[Emit],
) -> None:
    message = FakeMessage(created())
    await io.process(message, TENANT_CREATED, TenantCreated, lambda e: [status(e.tenant_id), status(e.tenant_id)])
    (record,) = audits(sent)
    assert (record.actor, record.action, record.tenant_id, record.outcome) == (
        "event:tenant-created-events", "provision-tenant", "acme", "succeeded")
    assert record.detail == {"source_topic": TENANT_CREATED, "event_id": "evt-1", "records": 2}
    assert message.acked


async def test_a_refused_event_is_dead_lettered_and_audited_as_refused(io: AgentRuntime, sent: list[Emit]) -> None:
    def refuse(_event: TenantCreated) -> list[Emit]:
        raise Refused("tenant-exists", "another create")

    await io.process(FakeMessage(created()), TENANT_CREATED, TenantCreated, refuse)
    assert [e.topic for e in sent] == ["dead-letter-events", AUDIT_EVENTS]
    (record,) = audits(sent)
    assert (record.outcome, record.detail["reason"]) == ("refused", "tenant-exists")


async def test_a_handler_that_raises_is_audited_as_failed(
    io: AgentRuntime, sent: list[Emit], monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handler_failed(*_args: Any) -> None:
        return None

    monkeypatch.setattr(io, "handler_failed", handler_failed)

    def broken(_event: TenantCreated) -> list[Emit]:
        raise KeyError("bug")

    await io.process(FakeMessage(created()), TENANT_CREATED, TenantCreated, broken)
    (record,) = audits(sent)
    assert (record.outcome, record.detail["reason"]) == ("failed", "KeyError")


async def test_an_invalid_event_is_not_audited(io: AgentRuntime, sent: list[Emit]) -> None:
    await io.process(FakeMessage(b"{not json"), TENANT_CREATED, TenantCreated, lambda e: [])
    assert audits(sent) == []


def test_the_audit_record_of_a_redelivery_has_the_same_id_and_unaudited_topics_have_none() -> None:
    event = TenantCreated.model_validate_json(created("evt-9"))
    first = audit_emit(TENANT_CREATED, event, "succeeded", NOW)
    again = audit_emit(TENANT_CREATED, event, "succeeded", NOW)
    assert first is not None and again is not None and first.value == again.value
    assert audit_emit(RESOURCE_METRICS, event, "succeeded", NOW) is None
    assert RESOURCE_METRICS not in EVENT_ACTIONS
    long = audit_emit(TENANT_CREATED, event, "refused", NOW, reason="x" * 1000)
    assert long is not None and len(long.value.detail["reason"]) == 200  # type: ignore[attr-defined]
