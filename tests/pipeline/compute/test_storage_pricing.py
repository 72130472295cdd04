"""Storage priced where the provider prices it: catalog column, engine quotes, the optimizer's ranking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.derivatives_standin import running_standin
from pipeline.compute.catalog import Offer, make_offer_id, parse_catalog
from pipeline.compute.engine_client import DerivativesEngineClient, offer_from_wire, offer_to_wire
from pipeline.compute.optimizer import TenantPolicy, choose
from pipeline.compute.request import ComputeRequest
from web.compute.models import ComputeQuote

HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice," \
    "StoragePricePerGiBHour"


def _offer(provider: str, price: float, storage_price: float | None) -> Offer:
    return Offer(
        offer_id=make_offer_id(provider, "r1", "cpu8", "on_demand"), provider=provider, region="r1",
        instance_type="cpu8", vcpus=8, memory_gib=32, price_per_hour=price,
        storage_price_per_gib_hour=storage_price,
    )


def _request(storage_gib: float, hours: float = 10.0) -> ComputeRequest:
    return ComputeRequest.model_validate(
        {"tenant_id": "acme", "resources": {"vcpus": 4, "storage_gib": storage_gib}, "duration_hours": hours}
    )


def test_a_catalog_column_prices_storage_and_a_hostile_value_skips_the_row() -> None:
    offers = parse_catalog(
        [
            HEADER,
            "cpu8,,,8,32,0.4,r1,,0.1,0.0002",
            "cpu16,,,16,64,0.8,r1,,,",
            "cpu32,,,32,128,1.6,r1,,,1e999",
            "cpu64,,,64,256,3.2,r1,,,5",
            "cpu4,,,4,16,0.2,r1,,,-0.1",
        ],
        "mycloud",
    )
    priced = {(o.instance_type, o.capacity_class): o.storage_price_per_gib_hour for o in offers}
    assert priced == {("cpu8", "on_demand"): 0.0002, ("cpu8", "spot"): 0.0002, ("cpu16", "on_demand"): None}


def test_storage_cost_changes_the_ranking_and_the_totals() -> None:
    cheap_machine_dear_disk = _offer("alpha", 0.40, 0.01)
    dear_machine_free_disk = _offer("beta", 0.50, None)
    offers = [cheap_machine_dear_disk, dear_machine_free_disk]

    without_disk = choose(_request(0), offers)
    assert without_disk.candidates[0].provider == "alpha"
    assert without_disk.candidates[0].storage_price_per_hour == 0

    with_disk = choose(_request(100), offers)
    first, second = with_disk.candidates
    assert (first.provider, second.provider) == ("beta", "alpha")
    assert second.storage_price_per_hour == pytest.approx(1.0)
    assert second.list_price_per_hour == pytest.approx(1.40)
    assert second.total_cost == pytest.approx(14.0)
    assert first.total_cost == pytest.approx(5.0)


def test_the_price_cap_and_the_budget_see_the_storage_cost() -> None:
    offers = [_offer("alpha", 0.40, 0.01)]
    capped = ComputeRequest.model_validate(
        {"tenant_id": "acme", "resources": {"vcpus": 4, "storage_gib": 100}, "duration_hours": 1,
         "max_price_per_hour": 1.0}
    )
    decision = choose(capped, offers)
    assert not decision.feasible and decision.binding_constraint is not None
    assert decision.binding_constraint.value == "price_cap"
    assert "$1.40/h" in (decision.message or "")
    budget = TenantPolicy(tenant_id="acme", budget_usd=10.0)
    assert choose(_request(100, hours=10), offers, policy=budget).binding_constraint is not None
    assert choose(_request(0, hours=10), offers, policy=budget).feasible


@given(
    price=st.floats(min_value=0, max_value=100, allow_nan=False),
    storage_price=st.one_of(st.none(), st.floats(min_value=0, max_value=1, allow_nan=False)),
    storage_gib=st.floats(min_value=0, max_value=1_000_000, allow_nan=False),
    hours=st.floats(min_value=0.01, max_value=2160, allow_nan=False),
    discount=st.floats(min_value=0, max_value=0.9, allow_nan=False),
)
def test_total_cost_is_machine_plus_storage_after_discount(
    price: float, storage_price: float | None, storage_gib: float, hours: float, discount: float
) -> None:
    policy = TenantPolicy(tenant_id="acme", discounts={"alpha": discount})
    decision = choose(_request(storage_gib, hours), [_offer("alpha", price, storage_price)], policy=policy)
    (candidate,) = decision.candidates
    hourly = price + storage_gib * (storage_price or 0.0)
    assert candidate.storage_price_per_hour == pytest.approx(storage_gib * (storage_price or 0.0))
    assert candidate.list_price_per_hour == pytest.approx(hourly)
    assert candidate.total_cost == pytest.approx(hourly * (1 - discount) * hours, rel=1e-9, abs=1e-9)


def test_the_wire_keeps_the_storage_price_and_refuses_an_absurd_one() -> None:
    offer = _offer("alpha", 0.4, 0.0003)
    assert offer_from_wire(offer_to_wire(offer)).storage_price_per_gib_hour == 0.0003
    hostile = offer_to_wire(offer) | {"storage_price_per_gib_hour": 1e308}
    with pytest.raises(ValueError):
        offer_from_wire(hostile)


async def test_the_engine_quotes_its_storage_price(real_offers: list[Offer]) -> None:
    async with running_standin(real_offers, storage_price_per_gib_hour=0.00015) as standin:
        async with DerivativesEngineClient(standin.url, timeout_s=5) as engine:
            quote = await engine.quote(gpu_name="h100", providers=["lambda"])
    assert quote.offers
    assert {o.storage_price_per_gib_hour for o in quote.offers} == {0.00015}


def test_the_quote_answer_shows_the_storage_part() -> None:
    decision = choose(_request(50, hours=2), [_offer("alpha", 0.40, 0.002)])
    (quoted,) = ComputeQuote.of(decision, None, limit=10).offers
    assert quoted.storage_price_per_hour == pytest.approx(0.1)
    assert quoted.list_price_per_hour == pytest.approx(0.5)
    assert quoted.total_cost == pytest.approx(1.0)


@pytest.mark.parametrize("field", ["wholesale_price_per_hour", "vcpus", "memory_gib", "max_storage_gib"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", 1e999])
def test_an_offer_with_a_non_finite_number_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        offer_from_wire(offer_to_wire(_offer("alpha", 0.4, None)) | {field: value})
