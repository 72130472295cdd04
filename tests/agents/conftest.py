"""Agents' collaborators built the way the worker builds them (``pipeline.worker.build_worker``), in process."""

from __future__ import annotations

import pytest

from agents.runtime import AgentRuntime
from pipeline.app import create_app
from pipeline.config import Settings
from pipeline.worker import Worker, build_worker


class SetDedupe:
    """The processed-events table as a plain set (the windowing is Faust's; the key is ours)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def seen(self, dedupe_key: str) -> bool:
        return dedupe_key in self.keys

    def mark(self, dedupe_key: str) -> None:
        self.keys.add(dedupe_key)


@pytest.fixture
def dedupe() -> SetDedupe:
    return SetDedupe()


@pytest.fixture
def io(dedupe: SetDedupe) -> AgentRuntime:
    """An agent runtime over a Faust app of its own (nothing connects: the app is never started)."""
    return AgentRuntime(create_app(Settings()), dedupe)


@pytest.fixture
def worker() -> Worker:
    """A whole worker as ``python -m pipeline worker`` puts it together (not started)."""
    return build_worker(Settings())
