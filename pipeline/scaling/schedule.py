"""Scheduled policies: which cron windows are active at an injected time.

A window is active from each time its cron expression fires (evaluated in the window's IANA time
zone, daylight-saving changes included, by croniter) for ``duration_minutes``. The caller passes the
time; nothing here reads the wall clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

from pipeline.scaling.policies import ScheduledPolicy, ScheduleWindow


@dataclass(frozen=True)
class ActiveWindow:
    policy_id: str
    name: str
    started_at: datetime
    ends_at: datetime
    window: ScheduleWindow
    combine: str


@dataclass(frozen=True)
class ScheduleEffect:
    """What the active windows impose at one instant (``None``: no opinion)."""

    min_replicas: int | None
    max_replicas: int | None
    desired_replicas: int | None
    override: bool
    active: tuple[ActiveWindow, ...]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("scheduled policies need a timezone-aware datetime")


def last_fire(window: ScheduleWindow, now: datetime) -> datetime:
    """The latest time at or before ``now`` when ``window.cron`` fired, in the window's zone."""
    _require_aware(now)
    local = now.astimezone(_zone(window.timezone))
    fired: datetime = croniter(window.cron, local + timedelta(microseconds=1)).get_prev(datetime)
    return fired


def next_fire(window: ScheduleWindow, now: datetime) -> datetime:
    """The first time strictly after ``now`` when ``window.cron`` fires."""
    _require_aware(now)
    local = now.astimezone(_zone(window.timezone))
    fired: datetime = croniter(window.cron, local).get_next(datetime)
    return fired


def active_windows(policy: ScheduledPolicy, now: datetime) -> list[ActiveWindow]:
    """Windows of ``policy`` active at ``now`` (none when the policy is disabled)."""
    if not policy.enabled:
        return []
    result: list[ActiveWindow] = []
    for index, window in enumerate(policy.windows):
        started = last_fire(window, now)
        ends = started + timedelta(minutes=window.duration_minutes)
        if started <= now < ends:
            result.append(
                ActiveWindow(
                    policy_id=policy.policy_id,
                    name=window.name or f"window-{index}",
                    started_at=started.astimezone(UTC),
                    ends_at=ends.astimezone(UTC),
                    window=window,
                    combine=policy.combine,
                )
            )
    return result


def schedule_effect(policies: Sequence[ScheduledPolicy], now: datetime) -> ScheduleEffect:
    """Combine the active windows of ``policies``: the largest min, max and desired values."""
    active: list[ActiveWindow] = []
    for policy in policies:
        active.extend(active_windows(policy, now))
    mins = [a.window.min_replicas for a in active if a.window.min_replicas is not None]
    maxs = [a.window.max_replicas for a in active if a.window.max_replicas is not None]
    desired = [a.window.desired_replicas for a in active if a.window.desired_replicas is not None]
    return ScheduleEffect(
        min_replicas=max(mins) if mins else None,
        max_replicas=max(maxs) if maxs else None,
        desired_replicas=max(desired) if desired else None,
        override=any(a.combine == "override" and a.window.desired_replicas is not None for a in active),
        active=tuple(active),
    )
