"""Log levels of the service and of the libraries it drives.

The service logs one line per provisioning step at INFO; the libraries under it (the Pulsar C++ client's
per-partition producer and consumer lines, aiokafka's and Faust's per-partition assignment and recovery
lines, the Kubernetes, HTTP and database clients) log at WARNING and above unless ``LOG_LEVEL=debug``.
"""

from __future__ import annotations

import logging
from typing import Any

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


def quiet_libraries(log_level: str) -> None:
    """Apply :func:`library_levels` to the loggers (before or after the root logger is configured)."""
    for name, level in library_levels(log_level).items():
        logging.getLogger(name).setLevel(level)


def logging_config(log_level: str) -> dict[str, Any]:
    """A ``dictConfig`` fragment that mode/Faust merges into its own (``merge``: its handlers stay)."""
    return {
        "version": 1,
        "merge": True,
        "disable_existing_loggers": False,
        "loggers": {name: {"level": logging.getLevelName(level)} for name, level in library_levels(log_level).items()},
    }


def configure(log_level: str) -> None:
    """Logging of a process that has no Faust worker to set it up (``python -m pipeline bridge``)."""
    logging.basicConfig(level=level_number(log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries(log_level)
