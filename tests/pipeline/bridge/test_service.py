"""The bridge service's supervision of its directions."""

from __future__ import annotations

from pipeline.bridge.service import Bridge
from pipeline.config import Settings


def test_a_failed_direction_is_restarted_until_the_bridge_stops() -> None:

    bridge = Bridge(Settings(), inbound=[], outbound=[])
    calls: list[int] = []

    def run() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("the broker went away")
        bridge._stopping.set()  # the second run ends as a stop would end it

    bridge._supervise(run)  # returns only once stopped; the failure did not end it
    assert calls == [0, 1]
