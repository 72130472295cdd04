"""The choice. The property test compares with a brute force that shares no code with the optimizer:
it parses the CSV files itself with the ``csv`` module and checks every constraint in a plain loop."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.compute.catalog import Offer, OfferBook
from pipeline.compute.optimizer import (
    ExclusionReason,
    NoFeasibleOffer,
    TenantPolicy,
    TenantUsage,
    choose,
    choose_or_raise,
)
from pipeline.compute.request import ComputeRequest

FILES = {"lambda": "lambda_vms.v8.csv", "nebius": "nebius_vms.v8.csv", "verda": "verda_vms.v8.csv"}


@dataclass(frozen=True)
class Row:
    provider: str
    region: str
    instance: str
    klass: str
    gpu: str | None
    gpus: int
    vcpus: float
    mem: float
    price: float

    @property
    def oid(self) -> str:
        return f"{self.provider}/{self.region}/{self.instance}/{self.klass}"


def brute_rows(catalog_dir: Path) -> list[Row]:
    rows = []
    for provider, name in FILES.items():
        with open(catalog_dir / name, newline="") as handle:
            for r in csv.DictReader(handle):
                gpu = r["AcceleratorName"] or None
                gpus = int(float(r["AcceleratorCount"])) if gpu else 0
                for klass, col in (("on_demand", "Price"), ("spot", "SpotPrice")):
                    if r[col]:
                        rows.append(Row(provider, r["Region"], r["InstanceType"], klass, gpu, gpus,
                                        float(r["vCPUs"]), float(r["MemoryGiB"]), float(r[col])))
    return rows


def brute_first_failure(row: Row, req: dict[str, Any], pol: dict[str, Any]) -> str | None:
    """The first failing check, written out plainly in the documented order."""
    want_gpu = req["gpu"]
    if want_gpu is None:
        if row.gpu is not None:
            return "gpu_type"
    elif row.gpu is None or row.gpu.lower() != want_gpu.lower():
        return "gpu_type"
    if row.gpus < req["gpus"]:
        return "gpu_count"
    if row.vcpus < req["vcpus"]:
        return "vcpus"
    if row.mem < req["mem"]:
        return "memory"
    if req["providers"] is not None and row.provider not in req["providers"]:
        return "provider"
    if row.provider in req["exclude_providers"]:
        return "provider"
    region = row.region.lower()
    if req["regions"] is not None and region not in req["regions"]:
        return "region"
    if region in req["exclude_regions"]:
        return "region"
    if row.klass == "spot" and not req["spot"]:
        return "spot"
    price = row.price * (1.0 - pol["discounts"].get(row.provider, 0.0))
    if req["cap"] is not None and price > req["cap"] + 1e-9:
        return "price_cap"
    if pol["tenant_cap"] is not None and price > pol["tenant_cap"] + 1e-9:
        return "tenant_price_cap"
    if pol["max_gpus"] is not None and row.gpus > pol["max_gpus"] - pol["in_use"]:
        return "quota"
    if pol["budget"] is not None and price * req["hours"] > pol["budget"] - pol["spent"] + 1e-9:
        return "budget"
    return None


def brute_best(rows: list[Row], req: dict[str, Any], pol: dict[str, Any], failures: dict[str, int]) -> Row | None:
    best: tuple[int, int, str] | None = None
    best_row = None
    for row in rows:
        if brute_first_failure(row, req, pol) is not None:
            continue
        price = row.price * (1.0 - pol["discounts"].get(row.provider, 0.0))
        key = (round(price * req["hours"] * 1_000_000), failures.get(row.oid, 0), row.oid)
        if best is None or key < best:
            best, best_row = key, row
    return best_row


def _mixed_case(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def random_feasible_case(
    rng: random.Random, rows: list[Row]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """A random request, tenant policy and failure history under which ``target`` is feasible."""
    target = rng.choice(rows)
    providers = sorted({r.provider for r in rows})
    regions = sorted({r.region.lower() for r in rows})
    discounts = {p: rng.choice([0.0, 0.0, 0.05, 0.1, 0.2, 0.35]) for p in providers}
    price = target.price * (1.0 - discounts[target.provider])
    hours = rng.choice([0.5, 1.0, 2.0, 6.0, 12.0, 24.0, 72.0, 168.0, rng.uniform(0.1, 300)])
    req: dict[str, Any] = {
        "gpu": target.gpu,
        "gpus": rng.randint(1, target.gpus) if target.gpu else 0,
        "vcpus": rng.choice([0.0, rng.uniform(0, target.vcpus), target.vcpus]) if target.gpu else
        rng.choice([1.0, rng.uniform(1, max(target.vcpus, 1)), target.vcpus]),
        "mem": rng.choice([0.0, rng.uniform(0, target.mem), target.mem]),
        "providers": None,
        "exclude_providers": [],
        "regions": None,
        "exclude_regions": [],
        "spot": target.klass == "spot" or rng.random() < 0.5,
        "cap": rng.choice([None, price, price * rng.uniform(1.0, 3.0)]),
        "hours": hours,
    }
    if rng.random() < 0.3:
        req["providers"] = sorted({target.provider, *rng.sample(providers, rng.randint(0, 2))})
    elif rng.random() < 0.3:
        req["exclude_providers"] = rng.sample([p for p in providers if p != target.provider], 1)
    if rng.random() < 0.3:
        req["regions"] = sorted({target.region.lower(), *rng.sample(regions, rng.randint(0, 4))})
    elif rng.random() < 0.4:
        req["exclude_regions"] = rng.sample([r for r in regions if r != target.region.lower()], rng.randint(1, 6))
    in_use = rng.randint(0, 8)
    pol: dict[str, Any] = {
        "discounts": discounts,
        "tenant_cap": rng.choice([None, price * rng.uniform(1.0, 2.0)]),
        "max_gpus": rng.choice([None, target.gpus + in_use + rng.randint(0, 8)]),
        "in_use": in_use,
        "budget": rng.choice([None, price * hours * rng.uniform(1.0, 3.0) + 10.0]),
        "spent": 10.0,
    }
    # failure history on a random set of offers: exercises the tie-break (Lambda repeats prices per region)
    failures = {r.oid: rng.randint(1, 3) for r in rng.sample(rows, 60)}
    return req, pol, failures


def to_models(
    req: dict[str, Any], pol: dict[str, Any], rng: random.Random
) -> tuple[ComputeRequest, TenantPolicy, TenantUsage]:
    resources: dict[str, Any] = {"vcpus": req["vcpus"], "memory_gib": req["mem"]}
    if req["gpu"]:
        resources["gpu"] = {"type": _mixed_case(rng, req["gpu"]), "count": req["gpus"]}
    request = ComputeRequest.model_validate(
        {
            "tenant_id": "t1",
            "resources": resources,
            "duration_hours": req["hours"],
            "providers": req["providers"],
            "exclude_providers": req["exclude_providers"],
            "regions": [_mixed_case(rng, r) for r in req["regions"]] if req["regions"] else req["regions"],
            "exclude_regions": req["exclude_regions"],
            "spot_allowed": req["spot"],
            "max_price_per_hour": req["cap"],
        }
    )
    policy = TenantPolicy(
        tenant_id="t1",
        max_gpus=pol["max_gpus"],
        max_price_per_hour=pol["tenant_cap"],
        budget_usd=pol["budget"],
        discounts=pol["discounts"],
    )
    return request, policy, TenantUsage(gpus_in_use=pol["in_use"], spent_usd=pol["spent"])


def test_1000_random_feasible_requests_match_brute_force(catalog_dir: Path, book: OfferBook) -> None:
    rows = brute_rows(catalog_dir)
    assert len(rows) == len(book) == 532
    rng = random.Random(20260501)
    ties_broken_by_failures = 0
    for case in range(1000):
        req, pol, failures = random_feasible_case(rng, rows)
        expected = brute_best(rows, req, pol, failures)
        assert expected is not None
        request, policy, usage = to_models(req, pol, rng)
        decision = choose(request, book, policy=policy, usage=usage, failures=failures, max_candidates=5)
        chosen = decision.chosen
        assert chosen is not None, (case, decision.message)
        assert chosen.offer_id == expected.oid, (case, req, pol)
        expected_price = expected.price * (1 - pol["discounts"][expected.provider])
        assert chosen.total_cost == pytest.approx(expected_price * req["hours"])
        if len(decision.candidates) > 1 and round(decision.candidates[1].total_cost, 6) == round(chosen.total_cost, 6):
            ties_broken_by_failures += decision.candidates[1].failures != chosen.failures
    assert ties_broken_by_failures > 0  # the tie-break was exercised


def test_exclusion_reasons_match_brute_force(catalog_dir: Path, book: OfferBook) -> None:
    """Every offer is either a candidate or excluded under the first check it fails (random requests,
    feasible or not)."""
    rows = brute_rows(catalog_dir)
    rng = random.Random(7)
    for _ in range(150):
        req, pol, failures = random_feasible_case(rng, rows)
        if rng.random() < 0.5:  # make many of them infeasible
            req["gpus"] = req["gpus"] * 4 if req["gpu"] else req["gpus"]
            req["cap"] = (req["cap"] or 5.0) / 3
        request, policy, usage = to_models(req, pol, rng)
        decision = choose(request, book, policy=policy, usage=usage, failures=failures, max_candidates=None)
        got = {oid: reason.value for reason, ids in decision.excluded.items() for oid in ids}
        got.update({c.offer_id: "feasible" for c in decision.candidates})
        want = {r.oid: brute_first_failure(r, req, pol) or "feasible" for r in rows}
        assert got == want
        assert decision.feasible_count + sum(len(v) for v in decision.excluded.values()) == decision.offers_considered


def _request(**kw: Any) -> ComputeRequest:
    base: dict[str, Any] = {"tenant_id": "t1", "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6}
    base.update(kw)
    return ComputeRequest.model_validate(base)


def test_four_h100_for_six_hours(book: OfferBook) -> None:
    decision = choose(_request(), book).raise_if_infeasible()
    chosen = decision.chosen
    assert chosen is not None
    assert (chosen.gpu_name, chosen.gpu_count) == ("H100", 4)
    assert chosen.total_cost == pytest.approx(16.36 * 6)  # Lambda gpu_4x_h100_sxm5
    # same price in all Lambda regions: ordered by offer id, all ranked right behind
    assert [c.total_cost for c in decision.candidates[:5]] == [chosen.total_cost] * 5


def test_discount_changes_the_choice(book: OfferBook) -> None:
    request = _request(resources={"gpu": {"type": "H100", "count": 8}})
    plain = choose(request, book).chosen
    assert plain is not None and plain.provider == "nebius"  # 23.60/h vs Lambda 31.92/h
    discounted = choose(request, book, policy=TenantPolicy(tenant_id="t1", discounts={"lambda": 0.3})).chosen
    assert discounted is not None and discounted.provider == "lambda"
    assert discounted.price_per_hour == pytest.approx(31.92 * 0.7)


def test_spot_only_when_allowed(book: OfferBook) -> None:
    request = _request(resources={"gpu": {"type": "H100", "count": 8}})
    assert choose(request, book).chosen.capacity_class == "on_demand"  # type: ignore[union-attr]
    spot = choose(request.model_copy(update={"spot_allowed": True}), book).chosen
    assert spot is not None and spot.capacity_class == "spot" and spot.price_per_hour == 10.0


def test_failure_history_breaks_ties(book: OfferBook) -> None:
    request = _request()
    first = choose(request, book).chosen
    assert first is not None
    second = choose(request, book, failures={first.offer_id: 2}).chosen
    assert second is not None and second.offer_id != first.offer_id
    assert second.total_cost == first.total_cost


@pytest.mark.parametrize(
    ("request_changes", "policy", "usage", "reason", "needle"),
    [
        ({"resources": {"gpu": {"type": "TPU-v5", "count": 1}}}, None, None, "gpu_type", "known GPU types"),
        ({"resources": {"gpu": {"type": "H100", "count": 16}}}, None, None, "gpu_count", "the most is 8"),
        ({"resources": {"gpu": {"type": "H100", "count": 1}, "vcpus": 512}}, None, None, "vcpus", "512 vCPUs"),
        ({"resources": {"gpu": {"type": "A10", "count": 1}, "memory_gib": 4096}}, None, None, "memory", "4096 GiB"),
        ({"providers": ["verda"], "resources": {"gpu": {"type": "A10", "count": 1}}}, None, None, "provider", "lambda"),
        ({"regions": ["FIN-01"]}, None, None, "region", "allowed regions"),
        ({"resources": {"gpu": {"type": "B200", "count": 2}}, "regions": ["FIN-03"]}, None, None, "spot",
         "spot_allowed is false"),
        ({"max_price_per_hour": 5}, None, None, "price_cap", "max_price_per_hour $5.00/h"),
        ({}, TenantPolicy(tenant_id="t1", max_price_per_hour=10), None, "tenant_price_cap", "tenant's limit"),
        ({}, TenantPolicy(tenant_id="t1", max_gpus=8), TenantUsage(gpus_in_use=6), "quota", "may add 2 GPU(s)"),
        ({}, TenantPolicy(tenant_id="t1", budget_usd=100), TenantUsage(spent_usd=50), "budget",
         "remaining budget $50.00"),
    ],
)
def test_infeasible_requests_name_the_constraint(
    book: OfferBook,
    request_changes: dict[str, Any],
    policy: TenantPolicy | None,
    usage: TenantUsage | None,
    reason: str,
    needle: str,
) -> None:
    request = _request(**request_changes)
    with pytest.raises(NoFeasibleOffer) as info:
        choose_or_raise(request, book, policy=policy, usage=usage)
    assert info.value.http_status == 422
    assert info.value.constraint == ExclusionReason(reason)
    assert str(info.value).startswith(f"{reason}: ")
    assert needle in str(info.value)


def test_capacity_exclusion_from_quotes(real_offers: list[Offer]) -> None:
    zero = [o.model_copy(update={"available": 0}) if o.gpu_name == "GH200" else o for o in real_offers]
    decision = choose(_request(resources={"gpu": {"type": "GH200", "count": 1}}), zero)
    assert decision.binding_constraint is ExclusionReason.CAPACITY
    assert len(decision.excluded[ExclusionReason.CAPACITY]) == 17


def test_decision_is_json_serialisable(book: OfferBook) -> None:
    from pipeline.compute.optimizer import Decision

    decision = choose(_request(regions=["us-east-1", "eu-north1"]), book)
    again = Decision.model_validate_json(decision.model_dump_json())
    assert again == decision
    assert again.reason_for("verda/FIN-02/1H100.80S.32V/on_demand") is ExclusionReason.GPU_COUNT
    assert again.exclusion_counts()["gpu_type"] > 0


def test_index_is_cached_per_book_version(book: OfferBook) -> None:
    from pipeline.compute.optimizer import index_for

    first = index_for(book)
    assert index_for(book) is first
    book.remove(["lambda/us-east-1/gpu_1x_a10/on_demand"])
    assert index_for(book) is not first
