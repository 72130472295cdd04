"""The quota a tier gives a new tenant, from the tiers file (TIERS_FILE, else the packaged one)."""

from __future__ import annotations

from pipeline.config import get_settings
from pipeline.events.models import Tier
from pipeline.provisioners.tiers import Quota, load_tiers


def quota_for_tier(tier: Tier) -> Quota:
    return load_tiers(get_settings().tiers_file).tier(tier.value).quota
