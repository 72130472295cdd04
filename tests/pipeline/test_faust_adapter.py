"""The private Faust attributes the adapter relies on still mean what it says, in the installed version."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, cast

import faust
from faust.types import EventT

from pipeline.faust_adapter import FAUST_VERSION, has_joined_group, processing


def test_the_installed_faust_is_the_checked_one() -> None:
    assert version("faust-streaming") == FAUST_VERSION


class FakeEvent:
    """Any object can be the current event: Faust only keeps a weak reference to it."""


def test_processing_makes_the_event_current_for_faust_and_restores_the_previous_one() -> None:
    event = cast(EventT[Any], FakeEvent())
    before = faust.current_event()
    with processing(event):
        assert faust.current_event() is event
    assert faust.current_event() is before


def test_a_new_app_has_not_joined_its_group_and_one_with_an_assignment_has() -> None:
    app = faust.App("faust-adapter-test", broker="memory://", store="memory://")
    assert not has_joined_group(app)
    app._assignment = set()  # what Faust sets when a rebalance completes, even with no partition for it
    assert has_joined_group(app)
