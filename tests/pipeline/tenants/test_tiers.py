"""quota_for_tier reads the tiers file at most once per RECHECK_SECONDS, and an edited file still applies."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.events.models import Tier
from pipeline.provisioners.tiers import DEFAULT_TIERS_FILE
from pipeline.tenants.tiers import RECHECK_SECONDS, TierQuotas, quota_for_tier

PACKAGED_FREE_LINE = "quota: {cpu_cores: 2, memory_gib: 4, gpus: 0, storage_gib: 10}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_tiers(path: Path, free_cpu: int, mtime_ns: int) -> None:
    text = DEFAULT_TIERS_FILE.read_text(encoding="utf-8")
    assert PACKAGED_FREE_LINE in text  # the packaged file this test edits
    edited = PACKAGED_FREE_LINE.replace("cpu_cores: 2", f"cpu_cores: {free_cpu}")
    path.write_text(text.replace(PACKAGED_FREE_LINE, edited), encoding="utf-8")
    # distinct modification times whatever the filesystem's resolution (the tiers cache keys on it)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_an_edited_tiers_file_applies_once_the_recheck_interval_passed(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.yaml"
    write_tiers(tiers, 3, 1_000_000_000)
    clock = Clock()
    quotas = TierQuotas(lambda: tiers, clock=clock)
    assert quotas(Tier.FREE).cpu_cores == 3

    write_tiers(tiers, 5, 2_000_000_000)
    clock.now += RECHECK_SECONDS / 2
    assert quotas(Tier.FREE).cpu_cores == 3  # not looked at again yet
    clock.now += RECHECK_SECONDS / 2
    assert quotas(Tier.FREE).cpu_cores == 5


def test_another_tiers_file_applies_at_once(tmp_path: Path) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    write_tiers(first, 3, 1_000_000_000)
    write_tiers(second, 7, 1_000_000_000)
    current = [first]
    quotas = TierQuotas(lambda: current[0], clock=Clock())
    assert quotas(Tier.FREE).cpu_cores == 3
    current[0] = second
    assert quotas(Tier.FREE).cpu_cores == 7


def test_the_default_reads_the_packaged_file() -> None:
    assert quota_for_tier(Tier.FREE).cpu_cores == 2
    assert quota_for_tier(Tier.ENTERPRISE).gpus == 4
