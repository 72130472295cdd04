"""Failure isolation: one failing tenant, record or run is counted and logged, and the loop goes on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pipeline.isolation import guarded, isolated
from pipeline.metrics import FAILURES


def failures(component: str) -> float:
    return FAILURES.labels(component)._value.get()


async def test_a_timer_body_failing_for_one_tenant_handles_the_others_and_runs_again() -> None:
    handled: list[str] = []

    @guarded("test-timer")
    async def tick() -> None:
        for tenant_id in ("a", "b", "c"):
            with isolated("test-timer-tenant", tenant_id):
                if tenant_id == "b":
                    raise RuntimeError("bad record of b")
                handled.append(tenant_id)

    before = failures("test-timer-tenant")
    await tick()
    await tick()  # the next run of the timer
    assert handled == ["a", "c", "a", "c"]
    assert failures("test-timer-tenant") == before + 2


async def test_a_whole_run_that_fails_is_counted_and_the_next_run_happens() -> None:
    runs: list[int] = []

    @guarded("test-run")
    async def tick() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise KeyError("table not ready")

    before = failures("test-run")
    await tick()
    await tick()
    assert runs == [0, 1] and failures("test-run") == before + 1


async def test_cancellation_still_propagates() -> None:
    @guarded("test-cancel")
    async def tick() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(tick())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(asyncio.CancelledError), isolated("test-cancel"):
        raise asyncio.CancelledError


def test_the_metric_labels_are_the_component_only() -> None:
    with isolated("test-labels", f"tenant-{datetime.now(UTC).isoformat()}"):  # the subject is only logged
        raise ValueError("x")
    assert FAILURES._labelnames == ("component",)
