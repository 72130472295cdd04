"""Every use of a private faust-streaming attribute outside the consumer (``pipeline/faust_consumer.py``), behind
small named functions, so that an upgrade re-checks one module.

Checked against faust-streaming ``FAUST_VERSION``. What is relied on:

- ``faust.streams._current_event``: the context variable holding a weak reference to the event in progress;
  Faust takes the changelog partition of a table write from it (:func:`processing`).
- ``App._assignment``: ``None`` until the first rebalance completed (:func:`has_joined_group`).

Elsewhere, by subclassing: ``App._new_producer`` (``pipeline/app.py``) and the consumer and producer methods
that ``pipeline/faust_consumer.py`` replaces (its own version check runs at worker start).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import EventT

#: The faust-streaming version the private attributes used here were checked against.
FAUST_VERSION = "0.15.3"


@contextmanager
def processing(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the one Faust considers in progress while the block runs."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def has_joined_group(app: faust.App) -> bool:
    """Whether the app's consumer completed its first rebalance (it has an assignment, possibly empty)."""
    return app._assignment is not None
