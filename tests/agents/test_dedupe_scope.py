"""The dedupe memory is scoped to (topic, tenant, event id): producers choose event ids, and two tenants'
events that share one must both take effect, while a true redelivery is still skipped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.runtime import AgentRuntime
from pipeline.contract.topics import TENANT_CREATED
from pipeline.events.models import TenantCreated, Tier
from pipeline.outputs import Emit
from pipeline.tenants.logic import TenantStores, handle_tenant_created
from pipeline.tenants.models import ProvisioningStatus, QuotaRecord, TenantRecord, UserRecord
from pipeline.tenants.tiers import quota_for_tier
from pipeline.typed_table import TypedTable
from tables import processed_events
from tests.agents.conftest import SetDedupe
from tests.pipeline.tenants.conftest import NOW


class FakeMessage:
    """A Faust event as the agent sees it: raw value bytes, a key, and ack()."""

    def __init__(self, event: TenantCreated) -> None:
        self.value = event.model_dump_json().encode()
        self.key = event.tenant_id.encode()
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


@pytest.fixture
def marks_table(io: AgentRuntime, dedupe: SetDedupe, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The keys the agent runtime marked processed; Kafka acknowledges every record at once."""

    async def accepted(emits: Any) -> list[asyncio.Future[Any]]:
        list(emits)
        return []  # every record acknowledged at once

    monkeypatch.setattr(io, "send_all", accepted)
    return dedupe.keys


def stores() -> TenantStores:
    return TenantStores(
        tenants=TypedTable({}, TenantRecord),
        quotas=TypedTable({}, QuotaRecord),
        status=TypedTable({}, ProvisioningStatus),
        users=TypedTable({}, UserRecord),
    )


def created(tenant_id: str, event_id: str) -> TenantCreated:
    return TenantCreated(event_id=event_id, tenant_id=tenant_id, occurred_at=NOW, name=f"{tenant_id} Inc",
                         tier=Tier.STANDARD)


async def test_two_tenants_events_sharing_an_event_id_both_take_effect(io: AgentRuntime, marks_table: set[str]) -> None:
    tables = stores()

    def handle(event: TenantCreated) -> list[Emit]:
        return handle_tenant_created(event, tables, quota_for_tier, NOW)

    for tenant_id in ("acme", "globex"):
        await io.process(FakeMessage(created(tenant_id, "shared-id")), TENANT_CREATED,  # type: ignore[arg-type]
                         TenantCreated, handle)
    assert tables.tenants.get("acme") is not None
    assert tables.tenants.get("globex") is not None  # was dropped as a "duplicate" of acme's event
    assert len(marks_table) == 2


async def test_a_redelivery_of_the_same_tenants_event_is_still_skipped(io: AgentRuntime, marks_table: set[str]) -> None:
    calls: list[str] = []

    def handle(event: TenantCreated) -> list[Emit]:
        calls.append(event.tenant_id)
        return []

    for _ in range(3):
        message = FakeMessage(created("acme", "evt-1"))
        await io.process(message, TENANT_CREATED, TenantCreated, handle)  # type: ignore[arg-type]
        assert message.acked
    assert calls == ["acme"]


def test_the_same_id_on_another_topic_or_tenant_is_another_key() -> None:
    base = processed_events.key("tenant-created-events", "acme", "e1")
    assert base != processed_events.key("tenant-deleted-events", "acme", "e1")
    assert base != processed_events.key("tenant-created-events", "globex", "e1")
    # parts cannot run into each other whatever they contain
    assert processed_events.key("t", "a,b", "c") != processed_events.key("t", "a", "b,c")
