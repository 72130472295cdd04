from __future__ import annotations

import itertools
import random

import pytest

from pipeline.scaling.fairshare import (
    FairShareResult,
    ResourceVector,
    TenantDemand,
    drf_allocate,
    tasks_usable,
    tier_weights,
)


def vec(cpu: float = 0.0, memory: float = 0.0, gpu: float = 0.0) -> ResourceVector:
    return ResourceVector(cpu=cpu, memory=memory, gpu=gpu)


GHODSI = vec(cpu=9, memory=18)


def ghodsi(a: ResourceVector | None = None, b: ResourceVector | None = None) -> FairShareResult:
    return drf_allocate(
        GHODSI,
        [
            TenantDemand(tenant_id="A", per_replica=a or vec(1, 4), replicas=100),
            TenantDemand(tenant_id="B", per_replica=b or vec(3, 1), replicas=100),
        ],
    )


def test_ghodsi_textbook_example() -> None:
    result = ghodsi()
    assert result.granted() == {"A": 3, "B": 2}
    a, b = result.grant("A"), result.grant("B")
    assert (a.dominant_resource, b.dominant_resource) == ("memory", "cpu")
    assert a.dominant_share == pytest.approx(2 / 3)
    assert b.dominant_share == pytest.approx(2 / 3)
    assert result.used == vec(9, 14)
    assert result.contended


@pytest.mark.parametrize("factors", list(itertools.product([1, 1.5, 2, 3], repeat=2)))
def test_lying_about_demand_does_not_pay(factors: tuple[float, float]) -> None:
    fc, fm = factors
    truthful = ghodsi()
    lie_a = ghodsi(a=vec(1 * fc, 4 * fm))
    assert tasks_usable(lie_a.grant("A").resources, vec(1, 4)) <= truthful.grant("A").granted
    lie_b = ghodsi(b=vec(3 * fc, 1 * fm))
    assert tasks_usable(lie_b.grant("B").resources, vec(3, 1)) <= truthful.grant("B").granted


def test_everybody_is_served_when_demand_fits() -> None:
    result = drf_allocate(
        vec(100, 100, 4),
        [
            TenantDemand(tenant_id="a", per_replica=vec(1, 2), replicas=5),
            TenantDemand(tenant_id="b", per_replica=vec(2, 1, 1), replicas=3),
        ],
    )
    assert result.granted() == {"a": 5, "b": 3}
    assert not result.contended
    assert {a.limited_by for a in result.allocations} == {"demand"}


def test_weights_give_proportional_dominant_shares() -> None:
    result = drf_allocate(
        vec(cpu=12),
        [
            TenantDemand(tenant_id="gold", per_replica=vec(1), replicas=100, weight=2.0),
            TenantDemand(tenant_id="bronze", per_replica=vec(1), replicas=100, weight=1.0),
        ],
    )
    assert result.granted() == {"gold": 8, "bronze": 4}


def test_quota_caps_a_tenant_and_the_rest_goes_to_others() -> None:
    result = drf_allocate(
        vec(cpu=10, memory=10),
        [
            TenantDemand(tenant_id="a", per_replica=vec(1, 1), replicas=10, quota=vec(3, 10)),
            TenantDemand(tenant_id="b", per_replica=vec(1, 1), replicas=10),
            TenantDemand(tenant_id="c", per_replica=vec(1, 1), replicas=10, max_replicas=2),
        ],
    )
    assert result.granted() == {"a": 3, "b": 5, "c": 2}
    assert result.grant("a").limited_by == "quota"
    assert result.grant("c").limited_by == "quota"
    assert result.grant("b").limited_by == "capacity"


def test_three_tenants_competing_for_too_few_gpus() -> None:
    per = vec(cpu=4, memory=16, gpu=1)
    demands = [
        TenantDemand(tenant_id=t, per_replica=per, replicas=3, weight=w)
        for t, w in (("t1", 1.0), ("t2", 2.0), ("t3", 1.0))
    ]
    result = drf_allocate(vec(cpu=64, memory=256, gpu=4), demands)
    assert result.granted() == {"t1": 1, "t2": 2, "t3": 1}
    assert all(a.dominant_resource == "gpu" for a in result.allocations)
    assert result.used.gpu == 4


def test_progressive_filling_properties_on_random_instances() -> None:
    rng = random.Random(42)
    for _ in range(30):
        capacity = vec(rng.randint(8, 64), rng.randint(16, 256), rng.randint(0, 8))
        demands = []
        for i in range(rng.randint(2, 5)):
            gpu = rng.choice([0, 0, 1]) if capacity.gpu else 0
            demands.append(
                TenantDemand(
                    tenant_id=f"t{i}",
                    per_replica=vec(rng.randint(1, 4), rng.randint(1, 16), gpu),
                    replicas=rng.randint(0, 40),
                    weight=rng.choice([1.0, 2.0, 4.0]),
                )
            )
        result = drf_allocate(capacity, demands)
        used = result.used.as_tuple()
        assert all(u <= c + 1e-9 for u, c in zip(used, capacity.as_tuple(), strict=True))
        by_id = {d.tenant_id: d for d in demands}
        for alloc in result.allocations:
            d = by_id[alloc.tenant_id]
            assert alloc.granted <= d.replicas
            if alloc.limited_by == "capacity":
                # Pareto: its next replica really does not fit
                need = d.per_replica.as_tuple()
                assert any(u + n > c + 1e-9 for u, n, c in zip(used, need, capacity.as_tuple(), strict=True))
                assert alloc.granted < d.replicas


def test_identical_tenants_end_within_one_replica() -> None:
    result = drf_allocate(
        vec(cpu=10, memory=100),
        [TenantDemand(tenant_id=t, per_replica=vec(1, 3), replicas=50) for t in ("a", "b", "c")],
    )
    granted = sorted(result.granted().values())
    assert sum(granted) == 10
    assert granted[-1] - granted[0] <= 1


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unique"):
        drf_allocate(vec(1, 1), [TenantDemand(tenant_id="a", per_replica=vec(1), replicas=1)] * 2)
    with pytest.raises(ValueError, match="gpu"):
        drf_allocate(vec(1, 1), [TenantDemand(tenant_id="a", per_replica=vec(gpu=1), replicas=1)])
    with pytest.raises(ValueError, match="some resource"):
        TenantDemand(tenant_id="a", per_replica=vec(), replicas=1)


def test_tier_weights() -> None:
    assert tier_weights({"a": "gold", "b": "free"}, {"gold": 4}) == {"a": 4.0, "b": 1.0}


def test_group_quotas_cap_the_sum_of_a_groups_demands() -> None:
    capacity = ResourceVector(cpu=100, memory=100, gpu=10)
    one_gpu = ResourceVector(cpu=1, memory=1, gpu=1)
    demands = [
        TenantDemand(tenant_id="a/w1", per_replica=one_gpu, replicas=5, group="a"),
        TenantDemand(tenant_id="a/w2", per_replica=one_gpu, replicas=5, group="a"),
        TenantDemand(tenant_id="b/w1", per_replica=one_gpu, replicas=5, group="b"),
    ]
    result = drf_allocate(capacity, demands, {"a": ResourceVector(cpu=100, memory=100, gpu=3)})
    granted = result.granted()
    assert granted["a/w1"] + granted["a/w2"] == 3  # the group's quota, over both of its demands
    assert granted["b/w1"] == 5  # no quota for b: its whole demand
    assert result.grant("a/w2").limited_by == "quota"
    assert drf_allocate(capacity, demands).granted() == {"a/w1": 4, "a/w2": 3, "b/w1": 3}  # no quota; ties by id
