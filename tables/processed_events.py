"""processed-events: (topic, tenant, event id) -> 1, in tumbling windows that expire (a bounded dedupe memory).

Event ids are chosen by producers, so two tenants (or two topics) may well use the same one: an id alone
would make the second tenant's event look like a redelivery of the first and drop it. The mark is scoped
to the source topic and the tenant the event names.
"""

import json
from datetime import timedelta

from pipeline.app import app, table_options

HELP = "Keys (topic, tenant, event id) of events already processed, kept for the dedupe window."
WINDOW = timedelta(seconds=app.settings.dedupe_window_seconds)
table = app.Table("processed-events", default=int, **table_options(HELP)).tumbling(WINDOW, expires=WINDOW * 2)


def key(source_topic: str, tenant_id: str, event_id: str) -> str:
    """The dedupe key of an event: a JSON array, so no separator inside a part can make two keys collide."""
    return json.dumps([source_topic, tenant_id, event_id], separators=(",", ":"))


def seen(dedupe_key: str) -> bool:
    """True if ``dedupe_key`` (see :func:`key`) was processed in this window or the previous one (call
    inside an agent)."""
    window = table[dedupe_key]
    return bool(window.current() or window.delta(WINDOW))


def mark(dedupe_key: str) -> None:
    table[dedupe_key] = 1
