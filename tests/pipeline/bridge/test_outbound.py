"""The outbound copy's commits."""

from __future__ import annotations

from pipeline.bridge.outbound import outbound_offsets


def test_outbound_commits_the_offset_after_the_last_record_of_each_partition() -> None:
    class Record:
        def __init__(self, topic: str, partition: int, offset: int) -> None:
            self._t, self._p, self._o = topic, partition, offset

        def topic(self) -> str:
            return self._t

        def partition(self) -> int:
            return self._p

        def offset(self) -> int:
            return self._o

    offsets = outbound_offsets([Record("a", 0, 5), Record("a", 1, 9), Record("a", 0, 6), Record("b", 0, 0)])
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in offsets) == [("a", 0, 7), ("a", 1, 10), ("b", 0, 1)]
