"""The forecasters' residency: per-tenant and global caps, least recently used evicted first."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scaling.residency import ModelResidency


def test_the_least_recently_used_of_the_tenant_goes_first() -> None:
    residency = ModelResidency(per_tenant=2, total=10)
    assert residency.touch("a/1", "a") == [] and residency.touch("a/2", "a") == []
    residency.touch("a/1", "a")  # a/2 is now the least recently used
    assert residency.touch("a/3", "a") == [("a/2", "tenant_cap")]
    assert "a/2" not in residency and residency.tenant_count("a") == 2


def test_keys_of_the_same_batch_are_kept_even_over_the_cap() -> None:
    residency = ModelResidency(per_tenant=1, total=10)
    residency.touch("a/1", "a")
    assert residency.touch("a/2", "a", keep={"a/1"}) == []
    assert residency.touch("a/3", "a") == [("a/1", "tenant_cap"), ("a/2", "tenant_cap")]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12),
       st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 9)), max_size=200))
def test_the_caps_hold_after_every_touch(per_tenant: int, total: int, uses: list[tuple[str, int]]) -> None:
    residency = ModelResidency(per_tenant, total)
    for tenant, workload in uses:
        key = f"{tenant}/{workload}"
        evicted = residency.touch(key, tenant)
        assert key in residency and all(victim != key for victim, _ in evicted)
        assert len(residency) <= total and all(residency.tenant_count(t) <= per_tenant for t in "abc")
