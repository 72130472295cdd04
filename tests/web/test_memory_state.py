from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pipeline.contract.topics import PROVISIONING_COMMANDS
from pipeline.events.models import QuotaExceeded, QuotaResource, ScalingRequest, Tier
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.logic import TENANT_RESOURCES
from pipeline.tenants.models import TenantState
from tests.web.conftest import TIER_QUOTAS, fixed_quota, tenant_event
from tests.web.memory_state import MemoryState
from web.state import CommandGateway, LiveUpdate, StateReader


def test_it_implements_both_protocols():
    state = MemoryState(quota_for_tier=fixed_quota)
    reader: StateReader = state
    gateway: CommandGateway = state
    assert reader is gateway


async def test_a_submitted_tenant_goes_through_the_domain_logic():
    state = MemoryState(quota_for_tier=fixed_quota)
    await state.submit_tenant(tenant_event("acme", Tier.ENTERPRISE))
    tenant = await state.tenant("acme")
    assert tenant is not None and tenant.tier is Tier.ENTERPRISE and tenant.state is TenantState.ACTIVE
    quota = await state.quota("acme")
    assert quota is not None and quota.limits == TIER_QUOTAS[Tier.ENTERPRISE]
    status = await state.provisioning_status("acme")
    assert status is not None and set(status.resources) == set(TENANT_RESOURCES)
    commands = [e for e in state.emitted if e.topic == PROVISIONING_COMMANDS]
    assert len(commands) == len(TENANT_RESOURCES)

    # the same event again (a redelivery past the dedupe window): the pending commands again, same ids
    await state.submit_tenant(tenant_event("acme"))
    again = [e for e in state.emitted if e.topic == PROVISIONING_COMMANDS]
    assert {e.value.command_id for e in again} == {e.value.command_id for e in commands}  # type: ignore[attr-defined]
    other = tenant_event("acme").model_copy(update={"event_id": "another"})
    await state.submit_tenant(other)  # a different event for an existing tenant: refused, like the agent
    assert [what for what, _ in state.dead_letters] == ["tenant-created"]


async def test_quota_changes_clear_over_quota_marks():
    state = MemoryState(quota_for_tier=fixed_quota)
    await state.submit_tenant(tenant_event("acme"))
    state.quota_exceeded(QuotaExceeded(event_id="q", tenant_id="acme", occurred_at=datetime.now(UTC),
                                       resource=QuotaResource.CPU_CORES, used=6, limit=4))
    assert QuotaResource.CPU_CORES in (await state.quota("acme")).over_quota  # type: ignore[union-attr]
    await state.set_quota("acme", Quota(cpu_cores=8, memory_gib=16, gpus=0, storage_gib=100), "root")
    quota = await state.quota("acme")
    assert quota is not None and quota.over_quota == {} and quota.updated_by == "root"


async def test_updates_yield_live_updates_for_every_change():
    state = MemoryState(quota_for_tier=fixed_quota)
    updates = state.updates()
    first = asyncio.ensure_future(updates.__anext__())
    await asyncio.sleep(0)
    await state.submit_tenant(tenant_event("acme"))
    received: list[LiveUpdate] = [await first]
    for _ in range(2):
        received.append(await updates.__anext__())
    assert [u.kind for u in received] == ["tenant", "quota", "status"]
    assert all(u.tenant_id == "acme" for u in received)
    assert received[0].data["name"] == "Acme Inc"

    state.request_scaling(ScalingRequest(event_id="s", tenant_id="acme", occurred_at=datetime.now(UTC),
                                         workload="web", desired_replicas=3))
    kinds = [(await updates.__anext__()).kind for _ in range(4)]
    assert kinds[-1] == "scaling"
    await updates.aclose()
