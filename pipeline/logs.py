"""Log levels and formats of the service and of the libraries it drives.

The service logs one line per provisioning step at INFO; the libraries under it (the Pulsar C++ client's
per-partition producer and consumer lines, aiokafka's and Faust's per-partition assignment and recovery
lines, the Kubernetes, HTTP and database clients) log at WARNING and above unless ``LOG_LEVEL=debug``.

``LOG_FORMAT=json`` writes one JSON object per line: ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``,
``message`` and, where known, ``tenant_id``, ``event_id`` and ``command_id`` (from :func:`log_context`, set
around the handling of one event or command, or from ``extra=``), plus ``exc_info`` for a traceback. No other
field is written: an ``extra=`` or a logged dict cannot carry a secret into the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from pipeline.config import LogFormat
from pipeline.provisioners.base import is_unreachable

#: Loggers of libraries whose INFO lines describe their own machinery (a line per partition, per
#: connection, per request), not the service's work.
LIBRARY_LOGGERS = (
    "pulsar",
    "aiokafka",
    "kafka",
    "faust",
    "mode",
    "kubernetes",
    "urllib3",
    "aiohttp.access",
    "cassandra",
    "elasticsearch",
    "elastic_transport",
    "minio",
    "pyignite",
    "asyncio",
)


def level_number(log_level: str) -> int:
    """``debug``/``info``/``warning``/``error`` (any case) as a :mod:`logging` level."""
    level = logging.getLevelNamesMapping().get(log_level.strip().upper())
    if level is None:
        raise ValueError(f"unknown log level {log_level!r}")
    return level


def library_levels(log_level: str) -> dict[str, int]:
    """The level of every library logger for the service's ``log_level``: WARNING unless debug."""
    service = level_number(log_level)
    library = service if service <= logging.DEBUG else max(service, logging.WARNING)
    return {name: library for name in LIBRARY_LOGGERS}


#: Client loggers that write a warning or error, with a traceback, on every connection a backend refuses
#: (Cassandra's control connection, pyignite's handshake, urllib3's retries of minio and the Kubernetes client).
UNREACHABLE_NOISE_LOGGERS = ("cassandra.cluster", "pyignite.connection", "urllib3.connectionpool")


class UnreachableBackendNoise(logging.Filter):
    """Drops a client library's line about a backend that cannot be reached at all: while a backend is still
    starting (or down) every try of a waiting command would log a traceback. The executor logs one line when a
    command starts waiting for the backend and one when it joins instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        errors: list[BaseException] = []
        if record.exc_info and isinstance(record.exc_info[1], BaseException):
            errors.append(record.exc_info[1])
        if isinstance(record.args, tuple):
            errors += [arg for arg in record.args if isinstance(arg, BaseException)]
        return not any(is_unreachable(error) for error in errors)


_NOISE_FILTER = UnreachableBackendNoise()


def quiet_libraries(log_level: str) -> None:
    """Apply :func:`library_levels` to the loggers (before or after the root logger is configured); unless
    debugging, drop the clients' per-try lines about unreachable backends (:class:`UnreachableBackendNoise`)."""
    for name, level in library_levels(log_level).items():
        logging.getLogger(name).setLevel(level)
    for name in UNREACHABLE_NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if level_number(log_level) <= logging.DEBUG:
            logger.removeFilter(_NOISE_FILTER)
        else:
            logger.addFilter(_NOISE_FILTER)  # a filter already there is not added twice


#: What a JSON line may hold where known, besides timestamp, level, logger and message.
CONTEXT_FIELDS = ("tenant_id", "event_id", "command_id")
#: Every key a JSON line may have.
JSON_FIELDS = frozenset({"timestamp", "level", "logger", "message", "exc_info", "stack_info", *CONTEXT_FIELDS})
#: Longest value of a context field written (ids are far shorter; a hostile one is cut).
MAX_CONTEXT_CHARS = 256

_context: ContextVar[Mapping[str, str]] = ContextVar("log_context", default=MappingProxyType({}))


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Within the block (and the tasks it starts), JSON log lines carry these ``CONTEXT_FIELDS``."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"not a log context field: {sorted(unknown)}")
    merged = {**_context.get(), **{key: value for key, value in fields.items() if value is not None}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record (python-json-logger), with the fields of :data:`JSON_FIELDS` only."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        context = _context.get()
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name, context.get(name))  # extra= wins over the context
            if value is not None:
                log_data[name] = str(value)[:MAX_CONTEXT_CHARS]

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in log_data.items() if key in JSON_FIELDS}


def logging_config(log_level: str, log_format: LogFormat = "text") -> dict[str, Any]:
    """A ``dictConfig`` fragment that mode/Faust merges into its own (``merge``: its handlers stay; with json,
    the formatter of its stream handler, ``colored``, becomes :class:`JsonLineFormatter`)."""
    config: dict[str, Any] = {
        "version": 1,
        "merge": True,
        "disable_existing_loggers": False,
        "loggers": {name: {"level": logging.getLevelName(level)} for name, level in library_levels(log_level).items()},
    }
    if log_format == "json":
        config["formatters"] = {"colored": {"()": JsonLineFormatter}, "default": {"()": JsonLineFormatter}}
    return config


def configure(log_level: str, log_format: LogFormat = "text") -> None:
    """Logging of a process that has no Faust worker to set it up (``python -m pipeline bridge``)."""
    logging.basicConfig(level=level_number(log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLineFormatter())
        logging.captureWarnings(True)  # a Python warning is a log record too, not a plain stderr line
    quiet_libraries(log_level)
