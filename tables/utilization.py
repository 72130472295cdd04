"""utilization: "tenant id/workload" -> WindowStats per tumbling window of UTILIZATION_WINDOW_SECONDS.

Windows are placed by the samples' own time (``occurred_at``), not by when Kafka received them, so a
redelivered sample lands in the window that already counted it.
"""

from datetime import datetime, timedelta
from typing import cast

from faust.tables.wrappers import WindowWrapper

from pipeline.app import app, table_options
from pipeline.usage import RECENT_WINDOWS, TenantUtilization, WindowStats, recent_utilization
from tables.usage import usage

HELP = "Tumbling-window utilization aggregates (count, mean/max cpu, memory, gpus, requests) per workload."
WINDOW = timedelta(seconds=app.settings.utilization_window_seconds)
table = cast(
    WindowWrapper,
    app.Table("utilization", default=dict, **table_options(HELP)).tumbling(WINDOW, expires=WINDOW * 60),
)


def stored_window(key: str, start: datetime) -> WindowStats | None:
    """The window of ``key`` that starts at ``start``, as stored."""
    raw = table.relative_to(start)[key].value()
    return WindowStats.model_validate(raw) if raw else None


def store_window(key: str, start: datetime, stats: WindowStats) -> None:
    """Write a window (inside stream processing: the changelog partition is the current event's)."""
    table.relative_to(start)[key] = stats.model_dump()


class RecentUtilization:
    """Read-only view for the API: a tenant's most recent windows, per workload it has reported."""

    model = TenantUtilization

    def get(self, tenant_id: str) -> TenantUtilization | None:
        return recent_utilization(tenant_id, usage.get(tenant_id), stored_window, WINDOW, RECENT_WINDOWS)
