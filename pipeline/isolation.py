"""Failure isolation for loops that must keep going: timers, sweeps and agents.

A failure while handling one record, tenant or tick is logged with its traceback and counted in
``provisioning_failures_total{component}``; the loop goes on with the next one. ``component`` is a fixed
name from the code (never data), so the metric's labels stay bounded; the subject (a tenant or request id)
only goes to the log. ``asyncio.CancelledError`` (and every other ``BaseException``) still propagates: a
worker that is stopping must stop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec

from pipeline.metrics import FAILURES

logger = logging.getLogger(__name__)

P = ParamSpec("P")


def record_failure(component: str, exc: BaseException, subject: str = "") -> None:
    """Count and log (with its traceback) a failure of ``component`` for ``subject``."""
    FAILURES.labels(component).inc()
    logger.error("%s failed%s; going on", component, f" for {subject[:200]}" if subject else "", exc_info=exc)


@contextmanager
def isolated(component: str, subject: str = "") -> Iterator[None]:
    """Run the block; an ``Exception`` in it is counted, logged and swallowed."""
    try:
        yield
    except Exception as exc:
        record_failure(component, exc, subject)


def guarded(component: str) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Decorate the body of a timer or task: one failing run is counted and logged, the next one runs."""

    def wrap(body: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(body)
        async def run(*args: P.args, **kwargs: P.kwargs) -> None:
            with isolated(component):
                await body(*args, **kwargs)

        return run

    return wrap
