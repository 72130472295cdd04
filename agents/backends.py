"""The worker's provisioners, built once from settings."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from pipeline.app import app
from pipeline.executor import RetryPolicy
from pipeline.provisioners.base import Provisioner


@cache
def provisioners() -> Mapping[str, Provisioner]:
    from pipeline.provisioners.registry import build_provisioners

    built: Mapping[str, Provisioner] = build_provisioners(app.settings)
    return built


def retry_policy() -> RetryPolicy:
    settings = app.settings
    return RetryPolicy(
        max_attempts=settings.executor_max_attempts,
        base_delay=settings.executor_base_delay_seconds,
        max_delay=settings.executor_max_delay_seconds,
    )
