"""The worker's provisioners (built from settings on first use) and the executor's retry policy."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pipeline.config import Settings
from pipeline.executor import RetryPolicy
from pipeline.provisioners.base import Provisioner

BuildProvisioners = Callable[[Settings], Mapping[str, Provisioner]]


class Backends:
    """One set of provisioners per worker, built by ``build`` (``pipeline.provisioners.registry``) the first
    time a command, the reconciler or a dry run needs them."""

    def __init__(self, settings: Settings, build: BuildProvisioners) -> None:
        self.settings = settings
        self._build = build
        self._provisioners: Mapping[str, Provisioner] | None = None

    def provisioners(self) -> Mapping[str, Provisioner]:
        if self._provisioners is None:
            self._provisioners = self._build(self.settings)
        return self._provisioners

    def retry_policy(self) -> RetryPolicy:
        settings = self.settings
        return RetryPolicy(
            max_attempts=settings.executor_max_attempts,
            base_delay=settings.executor_base_delay_seconds,
            max_delay=settings.executor_max_delay_seconds,
            backend_wait=settings.provisioning_backend_wait_seconds,
        )
