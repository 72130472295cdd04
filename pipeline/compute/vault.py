"""Access details (private key, Jupyter token) that could not be handed over in the ``POST`` response: in
this process's memory only, until claimed once or expired; never in a table, a topic, an event or a log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.compute.access import AccessDetails

logger = logging.getLogger(__name__)


class AccessVault:
    """Undelivered access details, in this process's memory only, claimable once for ``ttl_s``."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: dict[str, tuple[AccessDetails, float]] = {}

    def deposit(self, request_id: str, access: AccessDetails) -> None:
        self._items[request_id] = (access, self._clock() + self.ttl_s)

    def claim(self, request_id: str) -> AccessDetails | None:
        """The access details, once: they are forgotten here as they are handed out."""
        entry = self._items.pop(request_id, None)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    def holds(self, request_id: str) -> bool:
        entry = self._items.get(request_id)
        return entry is not None and entry[1] > self._clock()

    def discard(self, request_id: str) -> None:
        self._items.pop(request_id, None)

    def expire(self) -> list[str]:
        now = self._clock()
        gone = [rid for rid, (_, until) in self._items.items() if until <= now]
        for request_id in gone:
            del self._items[request_id]
            logger.info("access details of %s expired unclaimed", request_id)
        return gone

    def __len__(self) -> int:
        return len(self._items)


