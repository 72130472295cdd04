"""Whether the worker may serve: joined its consumer group and recovered its tables, no rebalance."""

from __future__ import annotations

from typing import cast

import faust
from faust.tables.manager import TableManager

from pipeline.faust_adapter import has_joined_group


def is_ready(app: faust.App) -> tuple[bool, str]:
    """(ready, reason): the reason says what the worker is still waiting for."""
    if not has_joined_group(app):
        return False, "waiting to join the consumer group"
    if app.rebalancing:
        return False, "a rebalance is under way"
    recovery = cast(TableManager, app.tables).recovery
    if app.in_recovery or recovery.in_recovery:
        return False, "tables are being recovered from their changelogs"
    if app.tables and not recovery.completed.is_set():
        return False, "table recovery has not completed yet"
    return True, "ready"
