"""A typed view of a key/value table: pydantic records in, pydantic records out.

In the worker the backend is a changelog-backed Faust table (values stored as JSON); in unit tests it
is a plain ``dict``. The domain logic only ever sees this view.

A stored value that no longer validates (written by an older version, or poisoned before the models
refused non-finite numbers) reads as absent, logged and counted, instead of raising into the timer,
agent or REST handler that reads it: one bad record must not stop a worker, and the next write of that
key replaces it. Records that JSON cannot carry faithfully (non-finite numbers) are refused on write.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.metrics import TABLE_RECORDS_INVALID

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class TypedTable(Generic[M]):
    def __init__(self, backend: MutableMapping[Any, Any], model: type[M], name: str = "") -> None:
        self.backend = backend
        self.model = model
        self.name = name or model.__name__
        self.listeners: list[Callable[[str, str, M], None]] = []

    def get(self, key: str) -> M | None:
        raw = self.backend.get(key)
        if raw is None:
            return None
        return self._load(key, raw)

    def _load(self, key: str, raw: Any) -> M | None:
        try:
            return self.model.model_validate(raw)
        except (ValidationError, ValueError, TypeError, RecursionError) as exc:
            TABLE_RECORDS_INVALID.labels(self.name).inc()
            logger.error("table %s: the record of %r is invalid and read as absent: %s",
                         self.name, key[:200], str(exc)[:1000])
            return None

    def put(self, key: str, value: M) -> None:
        dumped = value.model_dump(mode="json")
        if not _finite(dumped):
            raise ValueError(f"table {self.name}: refusing to store a non-finite number in the record of {key!r}")
        self.backend[key] = dumped
        for listener in self.listeners:
            listener(self.name, key, value)

    def delete(self, key: str) -> None:
        if key in self.backend:
            del self.backend[key]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        """The keys, without reading the values."""
        return [key for key, raw in list(self.backend.items()) if raw is not None]

    def items(self) -> Iterator[tuple[str, M]]:
        for key, raw in list(self.backend.items()):
            if raw is not None:
                value = self._load(key, raw)
                if value is not None:
                    yield key, value

    def __len__(self) -> int:
        return len(self.backend)


def _finite(value: Any) -> bool:
    """Whether every float in a JSON-like value is finite (iterative: records may nest)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True
