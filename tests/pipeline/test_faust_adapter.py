"""The private Faust attributes the adapter relies on still mean what it says, in the installed version."""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import faust
import pytest
from faust.exceptions import ConsistencyError
from faust.types import EventT

from pipeline.faust_adapter import (
    FAUST_VERSION,
    StateResetAwareRecovery,
    StateResetAwareTableManager,
    has_joined_group,
    processing,
    state_reset_message,
)


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


def test_the_state_reset_message_is_one_sentence_naming_the_folder() -> None:
    message = state_reset_message(Path("/var/lib/provisioning/prod/v1/tables"))
    assert message.count("/var/lib/provisioning/prod/v1/tables") == 2  # what is wrong, and what to delete
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message


async def test_a_consistency_error_crashes_recovery_with_the_folder_to_delete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = faust.App("faust-adapter-reset", broker="memory://", store="memory://", datadir=str(tmp_path),
                    TableManager=StateResetAwareTableManager)
    recovery = app.tables.recovery
    assert isinstance(recovery, StateResetAwareRecovery)
    await recovery.crash(ConsistencyError("The persisted offset for changelog topic partition ... (5 > -1)."))
    reason = recovery.crash_reason
    assert isinstance(reason, ConsistencyError)
    tables = Path(app.conf.tabledir)
    assert tables.is_absolute() and tables.is_relative_to(tmp_path)
    assert str(reason) == state_reset_message(tables)
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical and "(5 > -1)" in critical[0] and str(tables) in critical[0]


async def test_other_crashes_of_recovery_are_left_as_they_are(tmp_path: Path) -> None:
    app = faust.App("faust-adapter-other", broker="memory://", store="memory://", datadir=str(tmp_path),
                    TableManager=StateResetAwareTableManager)
    error = RuntimeError("broker gone")
    await app.tables.recovery.crash(error)
    assert app.tables.recovery.crash_reason is error
