"""The quota a tier gives a new tenant, from the tiers file (TIERS_FILE, else the packaged one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config import get_settings
from pipeline.events.models import Tier
from pipeline.provisioners.tiers import Quota, TiersConfig, load_tiers

#: Seconds a read of the tiers file is used before its modification time is looked at again. ``load_tiers``
#: resolves the path and stats the file on every call (its cache is keyed by path and mtime): about a fifth
#: of the tenant-created agent's time when it ran once per event (docs/benchmarks.md section 8). An edited
#: tiers file still applies to the tenants created a second later, without a restart.
RECHECK_SECONDS = 1.0


class TierQuotas:
    """``quota_for_tier`` over the tiers file at ``path()``, re-checked at most every ``recheck`` seconds
    (and at once when ``path()`` names another file)."""

    def __init__(self, path: Callable[[], Path | None], clock: Callable[[], float] = time.monotonic,
                 recheck: float = RECHECK_SECONDS) -> None:
        self._path = path
        self._clock = clock
        self._recheck = recheck
        self._loaded: tuple[Path | None, TiersConfig, float] | None = None

    def __call__(self, tier: Tier) -> Quota:
        path, now = self._path(), self._clock()
        loaded = self._loaded
        if loaded is None or loaded[0] != path or now - loaded[2] >= self._recheck:
            loaded = self._loaded = (path, load_tiers(path), now)
        return loaded[1].tier(tier.value).quota


quota_for_tier = TierQuotas(lambda: get_settings().tiers_file)
