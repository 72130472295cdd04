"""The fair-share pool (pool.py): weighted DRF over the workloads' demands, expiry, the grants sent back."""

from __future__ import annotations

from datetime import timedelta

from pipeline.scaling.fairshare import ResourceVector
from pipeline.scaling.pool import allocate_pool, pool_grants
from pipeline.scaling.records import Demand
from pipeline.typed_table import TypedTable
from tests.pipeline.scaling.support import POOL, WALL, gpu_demand


def test_the_pool_gives_three_tenants_their_drf_shares_of_too_few_gpus() -> None:
    demands = {f"{d.tenant_id}/train": d for d in
               (gpu_demand("a", 4, 1), gpu_demand("b", 1, 1), gpu_demand("c", 1, 2))}
    allocation = allocate_pool(POOL, demands, WALL, 600)
    granted = {key: a.granted for key, a in allocation.allocations.items()}
    assert granted == {"a/train": 2, "b/train": 2, "c/train": 1}  # equal dominant (GPU) shares of 1/3
    assert {a.limited_by for a in allocation.allocations.values()} == {"capacity"}


def test_stale_demands_leave_the_pool_and_a_tenants_workloads_share_its_weight_and_quota() -> None:
    stale = gpu_demand("old", 1, 1).model_copy(update={"sent_at": WALL - timedelta(hours=2)})
    two = [gpu_demand("a", 1, 1).model_copy(update={"workload": w}) for w in ("w1", "w2")]
    demands = {"old/train": stale, "a/w1": two[0], "a/w2": two[1], "b/train": gpu_demand("b", 1, 1)}
    allocation = allocate_pool(ResourceVector(cpu=64, memory=1000, gpu=4), demands, WALL, 600)
    assert allocation.expired == ["old/train"]
    assert allocation.allocations["a/w1"].weight == 2.0 and allocation.allocations["b/train"].weight == 4.0
    a_total = allocation.allocations["a/w1"].granted + allocation.allocations["a/w2"].granted
    assert a_total == allocation.allocations["b/train"].granted == 2  # a tenant, not a workload, gets a share
    roomy = allocate_pool(ResourceVector(cpu=64, memory=1000, gpu=100), demands, WALL, 600).allocations
    assert roomy["a/w1"].granted + roomy["a/w2"].granted == 4  # the tenant's quota (4 GPUs) covers both
    assert roomy["b/train"].granted == 4 and roomy["a/w2"].limited_by == "quota"


def test_pool_grants_answer_the_asking_workload_and_every_workload_whose_grant_changed() -> None:
    table: TypedTable[Demand] = TypedTable({}, Demand)
    first = pool_grants(POOL, table, gpu_demand("a", 4, 1), WALL, 600)
    assert [(g.tenant_id, g.allocation.granted) for g in first] == [("a", 4)]
    second = pool_grants(POOL, table, gpu_demand("b", 1, 1), WALL, 600)
    assert sorted((g.tenant_id, g.allocation.granted) for g in second) == [("a", 3), ("b", 3)]
    third = pool_grants(POOL, table, gpu_demand("b", 1, 1), WALL, 600)
    assert [(g.tenant_id, g.allocation.granted) for g in third] == [("b", 3)]  # a's grant did not change


def test_the_pool_drops_a_demand_overtaken_by_a_newer_one() -> None:
    table: TypedTable[Demand] = TypedTable({}, Demand)
    newer = gpu_demand("a", 1, 1)
    older = gpu_demand("a", 1, 0).model_copy(update={"sent_at": WALL - timedelta(seconds=1), "replicas": 9})
    assert pool_grants(POOL, table, newer, WALL, 600)
    assert pool_grants(POOL, table, older, WALL, 600) == []
    assert table.get("a/train") is not None and table.get("a/train").per_replica.gpu == 1  # type: ignore[union-attr]
