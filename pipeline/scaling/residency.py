"""Which workloads' forecasters the model host keeps in memory: at most N per tenant and M in all, LRU.

The engine decides (it knows every request it sends), and tells the host what to drop with the request
that needs the room (``LearnRequest.evict``): the host handles requests in order, so the two never
disagree about what is held. An evicted workload's model is rebuilt from its snapshot and the windows kept
in its state when the workload's next window closes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container
from typing import Literal

EvictionReason = Literal["tenant_cap", "global_cap"]


class ModelResidency:
    """The resident workload keys (``tenant/workload``), least recently used first."""

    def __init__(self, per_tenant: int, total: int) -> None:
        if per_tenant < 1 or total < 1:
            raise ValueError("the forecaster caps must be at least 1")
        self.per_tenant = per_tenant
        self.total = total
        self._all: OrderedDict[str, str] = OrderedDict()  # key -> tenant
        self._tenants: dict[str, OrderedDict[str, None]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._all

    def __len__(self) -> int:
        return len(self._all)

    def tenant_count(self, tenant_id: str) -> int:
        return len(self._tenants.get(tenant_id, ()))

    def touch(self, key: str, tenant_id: str, keep: Container[str] = ()) -> list[tuple[str, EvictionReason]]:
        """``key`` is used now (it becomes resident if it was not). Returns the keys evicted to stay within the
        caps, least recently used first, never ``key`` nor one in ``keep`` (used by the same batch); when only
        those are left, the caps are exceeded until a later call."""
        mine = self._tenants.setdefault(tenant_id, OrderedDict())
        if key in self._all:
            self._all.move_to_end(key)
            mine.move_to_end(key)
            return []
        self._all[key] = tenant_id
        mine[key] = None
        evicted: list[tuple[str, EvictionReason]] = []
        while len(mine) > self.per_tenant and (victim := self._oldest(mine, key, keep)) is not None:
            self.discard(victim)
            evicted.append((victim, "tenant_cap"))
        while len(self._all) > self.total and (victim := self._oldest(self._all, key, keep)) is not None:
            self.discard(victim)
            evicted.append((victim, "global_cap"))
        return evicted

    @staticmethod
    def _oldest(keys: OrderedDict[str, str] | OrderedDict[str, None], key: str, keep: Container[str]) -> str | None:
        return next((k for k in keys if k != key and k not in keep), None)

    def discard(self, key: str) -> None:
        tenant_id = self._all.pop(key, None)
        if tenant_id is None:
            return
        mine = self._tenants[tenant_id]
        mine.pop(key, None)
        if not mine:
            del self._tenants[tenant_id]

    def clear(self) -> None:
        self._all.clear()
        self._tenants.clear()
