"""The engine client against the STAND-IN engine started in-process on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from devstack.derivatives_standin import RunningStandin, running_standin
from pipeline.compute.access import AccessSecrets
from pipeline.compute.backend import (
    AllocationNotFound,
    AllocationRefused,
    AllocationState,
    AllocationTimeout,
    BackendUnavailable,
    CapacityUnavailable,
    ComputeBackend,
)
from pipeline.compute.catalog import Offer
from pipeline.compute.engine_client import DerivativesEngineClient
from pipeline.compute.request import ComputeRequest

REQUEST = ComputeRequest.model_validate(
    {"tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": 1}}, "duration_hours": 1}
)
OFFER_ID = "lambda/us-east-1/gpu_1x_h100_pcie/on_demand"


@pytest.fixture
async def standin(real_offers: list[Offer]) -> AsyncIterator[RunningStandin]:
    async with running_standin(real_offers, default_capacity=2, wholesale_factor=0.8) as running:
        yield running


@pytest.fixture
async def client(standin: RunningStandin) -> AsyncIterator[DerivativesEngineClient]:
    async with DerivativesEngineClient(standin.url, timeout_s=5, allocate_timeout_s=0.5) as engine:
        yield engine


@pytest.fixture(scope="module")
def setup() -> object:
    return AccessSecrets.generate("test").setup()


def _offer(offers: list[Offer], offer_id: str = OFFER_ID) -> Offer:
    return next(o for o in offers if o.offer_id == offer_id)


async def test_health_and_quote(client: DerivativesEngineClient, real_offers: list[Offer]) -> None:
    assert isinstance(client, ComputeBackend)
    assert await client.health()
    quote = await client.quote(gpu_name="h100", providers=["lambda"])
    assert quote.offers and all(o.gpu_name == "H100" and o.provider == "lambda" for o in quote.offers)
    quoted = next(o for o in quote.offers if o.offer_id == OFFER_ID)
    assert quoted.source == "engine"
    assert quoted.price_per_hour == pytest.approx(_offer(real_offers).price_per_hour * 0.8)
    assert (quoted.capacity, quoted.available) == (2, 2)
    everything = await client.quote()
    assert len(everything.offers) == len(real_offers)


async def test_allocate_status_release_and_capacity(
    client: DerivativesEngineClient, standin: RunningStandin, real_offers: list[Offer], setup: object
) -> None:
    offer = _offer(real_offers)
    handle = await client.allocate(offer, REQUEST, client_token="tok-1", setup=setup)  # type: ignore[arg-type]
    assert handle.offer_id == OFFER_ID and handle.client_token == "tok-1"
    again = await client.allocate(offer, REQUEST, client_token="tok-1", setup=setup)  # type: ignore[arg-type]
    assert again.allocation_id == handle.allocation_id  # idempotent per token
    status = await client.status(handle.allocation_id)
    assert status.state is AllocationState.RUNNING
    pools = {(p.provider, p.region, p.instance_type): p for p in await client.capacity()}
    assert pools[("lambda", "us-east-1", "gpu_1x_h100_pcie")].allocated == 1
    await client.release(handle.allocation_id)
    await client.release(handle.allocation_id)  # idempotent
    assert (await client.status(handle.allocation_id)).state is AllocationState.RELEASED
    assert standin.engine.active_allocations() == []
    with pytest.raises(AllocationNotFound):
        await client.status("alloc-nope")


async def test_capacity_runs_out(
    client: DerivativesEngineClient, standin: RunningStandin, real_offers: list[Offer], setup: object
) -> None:
    offer = _offer(real_offers)
    for token in ("a", "b"):
        await client.allocate(offer, REQUEST, client_token=token, setup=setup)  # type: ignore[arg-type]
    with pytest.raises(CapacityUnavailable):
        await client.allocate(offer, REQUEST, client_token="c", setup=setup)  # type: ignore[arg-type]
    assert standin.engine.exhaust("nebius", "eu-north1") > 0
    nebius = _offer(real_offers, "nebius/eu-north1/gpu-h100-sxm_1gpu-16vcpu-200gb/on_demand")
    with pytest.raises(CapacityUnavailable):
        await client.allocate(nebius, REQUEST, client_token="d", setup=setup)  # type: ignore[arg-type]


async def test_injected_faults_are_typed_errors(
    client: DerivativesEngineClient, standin: RunningStandin, real_offers: list[Offer], setup: object
) -> None:
    offer = _offer(real_offers)
    standin.engine.fail_next(1, "refused")
    standin.engine.fail_next(1, "capacity")
    standin.engine.fail_next(1, "error")
    standin.engine.fail_next(1, "timeout", hang_s=3)
    for expected in (AllocationRefused, CapacityUnavailable, BackendUnavailable, AllocationTimeout):
        with pytest.raises(expected):
            await client.allocate(offer, REQUEST, client_token=f"t-{expected.__name__}", setup=setup)  # type: ignore[arg-type]
    # the timed-out call DID allocate (worst case); releasing its token frees it and tombstones the token
    assert len(standin.engine.active_allocations()) == 1
    await client.release_by_token("t-AllocationTimeout")
    assert standin.engine.active_allocations() == []
    with pytest.raises(AllocationRefused):
        await client.allocate(offer, REQUEST, client_token="t-AllocationTimeout", setup=setup)  # type: ignore[arg-type]


async def test_unknown_offer_and_unreachable_engine(client: DerivativesEngineClient, setup: object) -> None:
    ghost = Offer(offer_id="x/y/z/on_demand", provider="x", region="y", instance_type="z", vcpus=1, memory_gib=1,
                  price_per_hour=1)
    with pytest.raises(AllocationNotFound):
        await client.allocate(ghost, REQUEST, client_token="u", setup=setup)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        dead = DerivativesEngineClient("http://127.0.0.1:9", session=session, timeout_s=2)
        with pytest.raises(BackendUnavailable):
            await dead.health()


async def test_control_endpoints(standin: RunningStandin) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{standin.url}/_standin/faults", json={"kind": "capacity", "count": 2}) as r:
            assert r.status == 200
        async with session.post(f"{standin.url}/_standin/capacity",
                                json={"provider": "verda", "region": "FIN-03", "capacity": 0}) as r:
            assert (await r.json())["pools"] > 0
        async with session.get(f"{standin.url}/_standin/state") as r:
            state = await r.json()
    assert state["standin"] is True and state["active"] == []
    assert standin.engine.capacity_of(("verda", "FIN-03", "1B300.30V")) == 0
