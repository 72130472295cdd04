"""A typed view of a key/value table: pydantic records in, pydantic records out.

In the worker the backend is a changelog-backed Faust table (values stored as JSON); in unit tests it
is a plain ``dict``. The domain logic only ever sees this view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

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
        return self.model.model_validate(raw)

    def put(self, key: str, value: M) -> None:
        self.backend[key] = value.model_dump(mode="json")
        for listener in self.listeners:
            listener(self.name, key, value)

    def delete(self, key: str) -> None:
        if key in self.backend:
            del self.backend[key]

    def __contains__(self, key: str) -> bool:
        return self.backend.get(key) is not None

    def keys(self) -> list[str]:
        """The keys, without reading the values."""
        return [key for key, raw in list(self.backend.items()) if raw is not None]

    def items(self) -> Iterator[tuple[str, M]]:
        for key, raw in list(self.backend.items()):
            if raw is not None:
                yield key, self.model.model_validate(raw)

    def __len__(self) -> int:
        return len(self.backend)
