"""processed-events: (topic, tenant, event id) -> 1, in tumbling windows that expire (a bounded dedupe memory).

Event ids are chosen by producers, so two tenants (or two topics) may well use the same one: an id alone
would make the second tenant's event look like a redelivery of the first and drop it. The mark is scoped
to the source topic and the tenant the event names.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Protocol

from pipeline.app import ProvisioningApp, table_options

HELP = "Keys (topic, tenant, event id) of events already processed, kept for the dedupe window."


def key(source_topic: str, tenant_id: str, event_id: str) -> str:
    """The dedupe key of an event: a JSON array, so no separator inside a part can make two keys collide."""
    return json.dumps([source_topic, tenant_id, event_id], separators=(",", ":"))


class DedupeMemory(Protocol):
    """What the agents need of the dedupe memory (the table below, or a plain set in unit tests)."""

    def seen(self, dedupe_key: str) -> bool: ...

    def mark(self, dedupe_key: str) -> None: ...


class ProcessedEvents:
    """The windowed table of processed keys (see :func:`key`)."""

    def __init__(self, table: Any, window: timedelta) -> None:
        self.table = table
        self.window = window

    def seen(self, dedupe_key: str) -> bool:
        """True if ``dedupe_key`` was processed in this window or the previous one (call inside an agent)."""
        window = self.table[dedupe_key]
        return bool(window.current() or window.delta(self.window))

    def mark(self, dedupe_key: str) -> None:
        self.table[dedupe_key] = 1


def declare(app: ProvisioningApp) -> ProcessedEvents:
    """Declare the table on ``app``, windowed by DEDUPE_WINDOW_SECONDS (its name is its changelog topic's)."""
    window = timedelta(seconds=app.settings.dedupe_window_seconds)
    table = app.Table("processed-events", default=int, **table_options(HELP)).tumbling(window, expires=window * 2)
    return ProcessedEvents(table, window)
