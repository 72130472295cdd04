"""The /api/v1/compute routes (built as ``web.api.Operation`` records, mounted with the rest of the API)."""

from __future__ import annotations

from typing import Any

from web.api import Operation


def worker_operations(app: Any) -> list[Operation]:
    """The routes, backed by the worker's state (``app`` is the Faust app)."""
    return []
