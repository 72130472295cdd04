"""processed-events: event id -> 1, in tumbling windows that expire (a bounded dedupe memory)."""

from datetime import timedelta

from pipeline.app import app, table_options

HELP = "Ids of events already processed, kept for the dedupe window (DEDUPE_WINDOW_SECONDS)."
WINDOW = timedelta(seconds=app.settings.dedupe_window_seconds)
table = app.Table("processed-events", default=int, **table_options(HELP)).tumbling(WINDOW, expires=WINDOW * 2)


def seen(event_id: str) -> bool:
    """True if ``event_id`` was processed in this window or the previous one (call inside an agent)."""
    window = table[event_id]
    return bool(window.current() or window.delta(WINDOW))


def mark(event_id: str) -> None:
    table[event_id] = 1
