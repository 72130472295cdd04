"""Per source topic of either direction: its metrics and (inbound) the messages not yet acknowledged."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from pipeline.metrics import BRIDGE_FORWARDED, BRIDGE_LAG_SECONDS


class Route:
    """Per source topic: its short name and metric children, what happened since the last metrics update, and
    (inbound) the messages received and not yet acknowledged, in the order received."""

    __slots__ = ("count", "forwarded", "lag", "last_publish_ms", "name", "pending")

    def __init__(self, direction: str, name: str) -> None:
        self.name = name
        self.forwarded = BRIDGE_FORWARDED.labels(direction, name)
        self.lag = BRIDGE_LAG_SECONDS.labels(direction, name)
        self.count = 0
        self.last_publish_ms = 0
        #: [message, delivered] per message, oldest first.
        self.pending: deque[list[Any]] = deque()

    def delivered_prefix(self) -> Any:
        """The last message of the longest run of delivered messages at the head (taken off), or None."""
        pending = self.pending
        last = None
        while pending and pending[0][1]:
            last = pending.popleft()[0]
        return last

    def publish(self) -> None:
        """Move the counts to the metrics (once per serving, not per message: the labelled metric's lock and
        the clock are per-message costs otherwise)."""
        if self.count:
            self.forwarded.inc(self.count)
            self.lag.set(max(0.0, time.time() - self.last_publish_ms / 1000))
            self.count = 0
