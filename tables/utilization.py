"""utilization: "tenant id/workload" -> WindowStats per tumbling window of UTILIZATION_WINDOW_SECONDS.

Windows are placed by the samples' own time (``occurred_at``), not by when Kafka received them, so a
redelivered sample lands in the window that already counted it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from faust.tables.wrappers import WindowWrapper

from pipeline.app import ProvisioningApp, table_options
from pipeline.typed_table import TypedTable
from pipeline.usage import RECENT_WINDOWS, TenantUtilization, UsageRecord, WindowStats, recent_utilization

HELP = "Tumbling-window utilization aggregates (count, mean/max cpu, memory, gpus, requests) per workload."


class Utilization:
    """The windowed table, read and written by the window start (``window``: UTILIZATION_WINDOW_SECONDS)."""

    def __init__(self, table: WindowWrapper, window: timedelta) -> None:
        self.table = table
        self.window = window

    def stored_window(self, key: str, start: datetime) -> WindowStats | None:
        """The window of ``key`` that starts at ``start``, as stored."""
        raw = self.table.relative_to(start)[key].value()
        return WindowStats.model_validate(raw) if raw else None

    def store_window(self, key: str, start: datetime, stats: WindowStats) -> None:
        """Write a window (inside stream processing: the changelog partition is the current event's)."""
        self.store_record(key, start, stats.model_dump())

    def store_record(self, key: str, start: datetime, record: dict[str, Any]) -> None:
        """:meth:`store_window` for a window already dumped (``FoldedSamples.records``)."""
        self.table.relative_to(start)[key] = record


class RecentUtilization:
    """Read-only view for the API: a tenant's most recent windows, per workload it has reported."""

    model = TenantUtilization

    def __init__(self, utilization: Utilization, usage: TypedTable[UsageRecord]) -> None:
        self.utilization = utilization
        self.usage = usage

    def get(self, tenant_id: str) -> TenantUtilization | None:
        return recent_utilization(tenant_id, self.usage.get(tenant_id), self.utilization.stored_window,
                                  self.utilization.window, RECENT_WINDOWS)


def declare(app: ProvisioningApp) -> Utilization:
    """Declare the table on ``app`` (its name is its changelog topic's: never rename it)."""
    window = timedelta(seconds=app.settings.utilization_window_seconds)
    table = cast(
        WindowWrapper,
        app.Table("utilization", default=dict, **table_options(HELP)).tumbling(window, expires=window * 60),
    )
    return Utilization(table, window)
