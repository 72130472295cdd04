"""Folding batches of resource-metrics samples into the usage record and the utilization windows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.events.models import ResourceMetrics
from pipeline.usage import WindowStats, fold_samples, window_start

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def sample(event_id: str, at: datetime, cpu: float, workload: str = "api", tenant_id: str = "acme"
           ) -> ResourceMetrics:
    return ResourceMetrics(event_id=event_id, tenant_id=tenant_id, occurred_at=at, workload=workload,
                           cpu_cores=cpu, memory_gib=2.0, gpus=0, replicas=3)


def window_of(*samples: ResourceMetrics) -> WindowStats:
    stats = WindowStats()
    for each in samples:
        stats.add(each)
    return stats


def nothing_stored(_key: str, _start: datetime) -> WindowStats | None:
    return None


def test_window_start_floors_to_the_window_aligned_on_the_epoch() -> None:
    assert window_start(T0 + timedelta(seconds=59.9), MINUTE) == T0
    assert window_start(T0 + MINUTE, MINUTE) == T0 + MINUTE
    assert window_start(T0 + timedelta(minutes=7), timedelta(minutes=5)) == T0 + timedelta(minutes=5)


def test_a_batch_makes_one_window_per_workload_and_window_and_keeps_the_latest_sample() -> None:
    batch = [
        sample("a1", T0 + timedelta(seconds=5), 1.0),
        sample("b1", T0 + timedelta(seconds=6), 4.0, workload="train"),
        sample("a2", T0 + timedelta(seconds=35), 3.0),
        sample("a3", T0 + timedelta(seconds=65), 2.0),  # the next window
    ]
    folded = fold_samples(batch, None, nothing_stored, MINUTE)

    assert set(folded.windows) == {("acme/api", T0), ("acme/train", T0), ("acme/api", T0 + MINUTE)}
    first = folded.windows[("acme/api", T0)]
    assert (first.count, first.cpu_sum, first.cpu_max) == (2, 4.0, 3.0)
    assert first.event_ids == ["a1", "a2"] and first.replicas_last == 3
    assert folded.windows[("acme/api", T0 + MINUTE)].event_ids == ["a3"]
    assert folded.usage is not None
    assert folded.usage.workloads["api"].cpu_cores == 2.0  # the latest sample
    assert folded.usage.totals() == {"cpu_cores": 6.0, "memory_gib": 4.0, "gpus": 0.0}
    assert [s.event_id for s in folded.fresh] == ["a1", "b1", "a2", "a3"] and folded.duplicates == 0


def test_a_redelivered_sample_is_recognised_by_its_window_in_the_batch_or_as_stored() -> None:
    stored = {("acme/api", T0): window_of(sample("a1", T0, 1.0))}
    batch = [sample("a1", T0, 1.0), sample("a2", T0 + timedelta(seconds=10), 5.0), sample("a2", T0, 5.0)]

    folded = fold_samples(batch, None, lambda key, start: stored.get((key, start)), MINUTE)

    window = folded.windows[("acme/api", T0)]
    assert (window.count, window.cpu_sum, window.event_ids) == (2, 6.0, ["a1", "a2"])
    assert [s.event_id for s in folded.fresh] == ["a2"] and folded.duplicates == 2


def test_a_late_sample_counts_in_its_own_window_but_does_not_replace_a_newer_usage_sample() -> None:
    batch = [sample("new", T0 + 5 * MINUTE, 7.0), sample("old", T0, 1.0)]
    folded = fold_samples(batch, None, nothing_stored, MINUTE)
    assert folded.usage is not None and folded.usage.workloads["api"].cpu_cores == 7.0
    assert folded.windows[("acme/api", T0)].event_ids == ["old"]


def test_an_all_duplicate_batch_changes_nothing() -> None:
    stored = {("acme/api", T0): window_of(sample("a1", T0, 1.0))}
    folded = fold_samples([sample("a1", T0, 1.0)], None, lambda key, start: stored.get((key, start)), MINUTE)
    assert folded.usage is None and folded.windows == {} and folded.fresh == [] and folded.duplicates == 1
    assert stored[("acme/api", T0)].event_ids == ["a1"]  # what was read is not changed in place


# -- the fold against the reference: one pydantic window per (workload, window), one sample at a time ---------


def reference_fold(samples: list[ResourceMetrics], stored: dict[tuple[str, datetime], WindowStats],
                   size: timedelta) -> tuple[dict[tuple[str, datetime], WindowStats], list[str], int]:
    """What fold_samples computes, written the plain way (the way it was before it was made faster)."""
    windows: dict[tuple[str, datetime], WindowStats] = {}
    changed: dict[tuple[str, datetime], WindowStats] = {}
    fresh: list[str] = []
    duplicates = 0
    for each in samples:
        key = (f"{each.tenant_id}/{each.workload}", window_start(each.occurred_at, size))
        if key not in windows:
            found = stored.get(key)
            windows[key] = found.model_copy(deep=True) if found is not None else WindowStats()
        if each.event_id in windows[key].event_ids:
            duplicates += 1
            continue
        windows[key].add(each)
        changed[key] = windows[key]
        fresh.append(each.event_id)
    return changed, fresh, duplicates


finite_cpu = st.floats(min_value=0, max_value=512, allow_nan=False, allow_infinity=False)
a_sample = st.builds(
    lambda n, seconds, cpu, workload, replicas, requests: ResourceMetrics(
        event_id=f"e{n}", tenant_id="acme", occurred_at=T0 + timedelta(seconds=seconds), workload=workload,
        cpu_cores=cpu, memory_gib=cpu / 2, gpus=float(n % 3), replicas=replicas, requests_per_s=requests),
    st.integers(0, 30), st.floats(min_value=-200, max_value=400, allow_nan=False), finite_cpu,
    st.sampled_from(["api", "train"]), st.none() | st.integers(0, 50), st.none() | finite_cpu,
)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(a_sample, max_size=40), stored_batch=st.lists(a_sample, max_size=10),
       size_s=st.sampled_from([1.0, 30.0, 60.0, 90.0]))
def test_the_fold_computes_exactly_what_the_plain_fold_does(
    batch: list[ResourceMetrics], stored_batch: list[ResourceMetrics], size_s: float,
) -> None:
    size = timedelta(seconds=size_s)
    stored: dict[tuple[str, datetime], WindowStats] = {}
    for each in stored_batch:  # windows as an earlier batch left them
        window = stored.setdefault((f"acme/{each.workload}", window_start(each.occurred_at, size)), WindowStats())
        if each.event_id not in window.event_ids:
            window.add(each)
    before = {key: window.model_copy(deep=True) for key, window in stored.items()}

    folded = fold_samples(batch, None, lambda key, start: stored.get((key, start)), size)

    windows, fresh, duplicates = reference_fold(batch, stored, size)
    assert list(folded.windows) == list(windows)  # the same windows, written in the same order
    # Stored exactly as the models would be dumped: the same keys in the same order, the same values.
    dumped = [list(w.model_dump().items()) for w in windows.values()]
    assert [list(r.items()) for r in folded.records.values()] == dumped
    assert folded.windows == windows
    assert [s.event_id for s in folded.fresh] == fresh and folded.duplicates == duplicates
    assert stored == before  # the stored windows are not changed in place
    # Each new sample is placed where the scaling engine (windows of the same size) would place it.
    assert folded.window_seconds == size_s
    assert folded.placed == [
        (f"acme/{s.workload}", math.floor(s.occurred_at.timestamp() / size_s) * size_s) for s in folded.fresh
    ]
