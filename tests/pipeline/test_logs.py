"""LOG_LEVEL: the service's level; the libraries' chatter at WARNING unless debug."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from mode.utils.logging import setup_logging
from pydantic import ValidationError

from pipeline import logs
from pipeline.config import Settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = ["", *logs.LIBRARY_LOGGERS, "pulsar.client", "aiokafka.consumer.group_coordinator"]
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in names}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("level", "library", "service"), [
    ("info", logging.WARNING, logging.INFO),
    ("warning", logging.WARNING, logging.WARNING),
    ("error", logging.ERROR, logging.ERROR),
    ("debug", logging.DEBUG, logging.DEBUG),
])
def test_faust_logging_setup_keeps_libraries_at_warning_unless_debug(level: str, library: int, service: int) -> None:
    # What faust.Worker does with the worker's loglevel and logging_config (pipeline/worker.py).
    setup_logging(loglevel=level, logging_config=logs.logging_config(level))
    for name in ("pulsar.client", "aiokafka.consumer.group_coordinator", "faust.tables.recovery", "kubernetes",
                 "urllib3.connectionpool", "cassandra.cluster"):
        assert logging.getLogger(name).getEffectiveLevel() == library, name
    assert logging.getLogger("pipeline.provisioners.base").getEffectiveLevel() == service


def test_log_level_setting_is_checked_and_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert Settings().log_level == "debug"
    assert Settings(log_level=" Warning ").log_level == "warning"
    assert Settings.model_fields["log_level"].default == "info"
    for bad in ("verbose", "", "10"):
        with pytest.raises(ValidationError):
            Settings(log_level=bad)


async def test_one_info_line_per_provisioning_step_and_verifies_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace
    from typing import Any

    from pipeline.provisioners.base import BaseProvisioner

    step: Any = SimpleNamespace(resource="s3")
    tenant: Any = SimpleNamespace(tenant_id="acme")

    async def done() -> str:
        return "ok"

    caplog.set_level(logging.DEBUG, logger="pipeline.provisioners.base")
    for op in ("verify", "apply", "verify", "delete"):
        assert await BaseProvisioner._run(step, op, tenant, done) == "ok"
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert [m.split(" took ")[0] for m in info] == ["s3 apply of tenant acme", "s3 delete of tenant acme"]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 2
