"""LOG_LEVEL: the service's level; the libraries' chatter at WARNING unless debug."""

from __future__ import annotations

import json
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


def json_record(logger_name: str, level: int, message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger(logger_name).makeRecord(logger_name, level, __file__, 1, message, args, None,
                                                        extra=extra or None)
    return record


def test_a_record_with_extras_is_one_json_line_with_its_fields() -> None:
    from datetime import datetime

    record = json_record("pipeline.executor", logging.WARNING, "s3 apply of tenant %s failed: %s", "acme", "boom",
                         tenant_id="acme", event_id="evt-1", command_id="cmd-9")
    line = logs.JsonLineFormatter().format(record)
    assert "\n" not in line
    body = json.loads(line)
    assert body == {
        "timestamp": body["timestamp"], "level": "WARNING", "logger": "pipeline.executor",
        "message": "s3 apply of tenant acme failed: boom", "tenant_id": "acme", "event_id": "evt-1",
        "command_id": "cmd-9",
    }
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(stamp.timestamp() - record.created) < 1e-3


def test_the_log_context_fills_the_ids_where_known_and_extra_wins() -> None:
    formatter = logs.JsonLineFormatter()
    plain = json.loads(formatter.format(json_record("pipeline.bridge", logging.INFO, "no context")))
    assert not {"tenant_id", "event_id", "command_id"} & set(plain)
    with logs.log_context(tenant_id="globex", event_id="evt-2"):
        with logs.log_context(command_id="cmd-3"):
            inner = json.loads(formatter.format(json_record("agents.executor", logging.INFO, "inside")))
        outer = json.loads(formatter.format(json_record("agents.executor", logging.INFO, "x", tenant_id="other")))
    after = json.loads(formatter.format(json_record("agents.executor", logging.INFO, "after")))
    assert (inner["tenant_id"], inner["event_id"], inner["command_id"]) == ("globex", "evt-2", "cmd-3")
    assert outer["tenant_id"] == "other" and "command_id" not in outer
    assert "tenant_id" not in after
    with pytest.raises(ValueError, match="not a log context field"), logs.log_context(password="x"):  # type: ignore[arg-type]
        pass


def test_secrets_never_reach_a_json_line() -> None:
    from pydantic import SecretStr

    secret = "sasl-password-4f9e1"
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc", kafka_sasl_password=secret,
                        pulsar_auth_token=secret)
    formatter = logs.JsonLineFormatter()
    records = [
        json_record("pipeline.worker", logging.INFO, "settings: %r", settings),
        json_record("pipeline.worker", logging.INFO, "settings: %s", settings),
        json_record("pipeline.worker", logging.INFO, "connecting", password=secret, token=SecretStr(secret),
                    settings=settings, tenant_id="acme"),
        json_record("pipeline.worker", logging.INFO, {"message": "a dict", "password": secret}),  # type: ignore[arg-type]
    ]
    for record in records:
        line = formatter.format(record)
        body = json.loads(line)
        assert secret not in line
        assert set(body) <= logs.JSON_FIELDS


def test_an_exception_is_one_line_with_its_traceback() -> None:
    try:
        raise RuntimeError("bad\nthing")
    except RuntimeError:
        import sys

        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = logs.JsonLineFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert "RuntimeError: bad" in json.loads(line)["exc_info"]


@pytest.mark.usefixtures("restore_logging")
def test_log_format_json_makes_the_workers_handler_write_json(capsys: pytest.CaptureFixture[str]) -> None:
    # What faust.Worker does with the worker's loglevel and logging_config (pipeline/worker.py).
    setup_logging(loglevel="info", logging_config=logs.logging_config("info", "json"))
    with logs.log_context(tenant_id="acme", event_id="evt-7"):
        logging.getLogger("pipeline.test").info("hello %s", "world")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [json.loads(line)["message"] for line in lines] == ["hello world"]
    assert json.loads(lines[0])["tenant_id"] == "acme"


@pytest.mark.usefixtures("restore_logging")
def test_log_format_text_keeps_the_workers_text_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(loglevel="info", logging_config=logs.logging_config("info"))
    logging.getLogger("pipeline.test").info("hello %s", "text")
    err = capsys.readouterr().err
    assert "hello text" in err and not err.lstrip().startswith("{")


def _record(name: str, msg: str, args: tuple[object, ...] = (),
            error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)


@pytest.mark.usefixtures("restore_logging")
def test_client_lines_about_an_unreachable_backend_are_dropped_unless_debugging() -> None:
    import urllib3

    refused = ConnectionRefusedError(111, "Connection refused")
    retry = urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: refused")  # type: ignore[arg-type]
    logs.quiet_libraries("info")
    cassandra, urllib3_pool = logging.getLogger("cassandra.cluster"), logging.getLogger("urllib3.connectionpool")
    assert not cassandra.filter(_record("cassandra.cluster", "[control connection] Error connecting", error=refused))
    assert not urllib3_pool.filter(_record("urllib3.connectionpool", "Retrying (%r) after connection broken by '%r'",
                                           ("Retry(total=1)", retry)))
    # Anything else the clients say stays, a reachable server's errors included.
    assert cassandra.filter(_record("cassandra.cluster", "query failed", error=TimeoutError("read timed out")))
    assert cassandra.filter(_record("cassandra.cluster", "Host 10.0.0.1 is down"))
    logs.quiet_libraries("debug")
    assert cassandra.filter(_record("cassandra.cluster", "[control connection] Error connecting", error=refused))
