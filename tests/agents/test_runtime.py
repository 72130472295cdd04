"""PendingMarks: an event id is marked processed, and the event acknowledged, only after Kafka acknowledged
its records, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.streams import current_event

from agents import runtime


class FakeEvent:
    """Stands for the Faust event a mark is written for (its partition is where the mark goes)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


class RecordingDedupe:
    """Records each mark with the event current while it is written (its partition is where the mark goes)."""

    def __init__(self) -> None:
        self.written: list[tuple[str, Any]] = []

    def seen(self, dedupe_key: str) -> bool:
        return False

    def mark(self, dedupe_key: str) -> None:
        self.written.append((dedupe_key, current_event()))


@pytest.fixture
def dedupe() -> RecordingDedupe:
    return RecordingDedupe()


@pytest.fixture
def marked(dedupe: RecordingDedupe) -> list[tuple[str, Any]]:
    return dedupe.written


async def test_ids_are_marked_in_order_once_all_their_records_are_acknowledged(
    dedupe: RecordingDedupe, marked: list[tuple[str, Any]],
) -> None:
    loop = asyncio.get_running_loop()
    marks = runtime.PendingMarks(dedupe, limit=10)
    first, second = FakeEvent("e1"), FakeEvent("e2")
    first_records = [loop.create_future(), loop.create_future()]
    second_records = [loop.create_future()]
    await marks.add(first, "e1", first_records)  # type: ignore[arg-type]
    await marks.add(second, "e2", second_records)  # type: ignore[arg-type]
    assert "e1" in marks and "e2" in marks and marked == []

    second_records[0].set_result(None)
    first_records[0].set_result(None)
    marks.settle()
    assert marked == []  # e1 still has a record in flight, and e2 waits behind it
    assert not first.acked and not second.acked

    first_records[1].set_result(None)
    marks.settle()
    assert marked == [("e1", first), ("e2", second)]  # written as if each event were the current one
    assert first.acked and second.acked
    assert "e1" not in marks and current_event() is None


async def test_a_full_queue_waits_for_the_oldest_and_a_refused_event_is_marked_at_once(
    dedupe: RecordingDedupe, marked: list[tuple[str, Any]],
) -> None:
    loop = asyncio.get_running_loop()
    marks = runtime.PendingMarks(dedupe, limit=1)
    slow = loop.create_future()
    await marks.add(FakeEvent("e1"), "e1", [slow])  # type: ignore[arg-type]
    loop.call_later(0.05, slow.set_result, None)
    await marks.add(FakeEvent("e2"), "e2", [])  # type: ignore[arg-type]  # over the limit: waits for e1
    assert [event_id for event_id, _ in marked] == ["e1", "e2"]


async def test_a_refused_record_leaves_its_event_unacknowledged_and_blocks_the_ones_after(
    dedupe: RecordingDedupe, marked: list[tuple[str, Any]],
) -> None:
    loop = asyncio.get_running_loop()
    marks = runtime.PendingMarks(dedupe)
    failed = loop.create_future()
    failed.set_exception(RuntimeError("broker gone"))
    refused, later = FakeEvent("e1"), FakeEvent("e2")
    with pytest.raises(RuntimeError, match="broker gone"):
        await marks.add(refused, "e1", [failed])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="broker gone"):
        await marks.add(later, "e2", [])  # type: ignore[arg-type]
    assert marked == [] and not refused.acked and not later.acked  # offsets stay uncommitted: redelivered
    assert "e1" in marks
