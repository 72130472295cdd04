"""Audit records of what the platform's events made the service do, like those of REST writes.

A REST write is audited by the API's middleware (actor: the token's subject). An event from the platform
(``tenant-created-events``, ``quota-exceeded-events``...) acts without a token; its audit record names the
topic as the actor and says how the event ended: ``succeeded`` (handled, its records sent), ``refused``
(dead-lettered with a reason: unknown tenant, tenant exists...) or ``failed`` (the handler raised). Invalid
events (bad JSON, schema) are not audited: they never got as far as an action, and the dead letter says why.

The record's id is derived from the event's, so a redelivered event's audit record has the same id.
Resource-metrics samples are not audited: they act on nothing a person would look up, at a thousand a second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pipeline.contract.topics import (
    AUDIT_EVENTS,
    QUOTA_EXCEEDED,
    RESOURCE_ANOMALY,
    SCALING_REQUEST,
    TENANT_CREATED,
    TENANT_DELETED,
    USER_CREATED,
    USER_DELETED,
)
from pipeline.events.models import AuditEvent, Event
from pipeline.outputs import Emit, derived_id

#: The platform's input topics whose events are audited, and the action each one asks for (REST's names where
#: REST has the same action).
EVENT_ACTIONS: dict[str, str] = {
    TENANT_CREATED: "provision-tenant",
    TENANT_DELETED: "delete-tenant",
    USER_CREATED: "grant-user-access",
    USER_DELETED: "revoke-user-access",
    QUOTA_EXCEEDED: "mark-over-quota",
    RESOURCE_ANOMALY: "react-to-anomaly",
    SCALING_REQUEST: "scaling-request",
}

Outcome = Literal["succeeded", "refused", "failed"]


def audit_emit(
    source_topic: str, event: Event, outcome: Outcome, now: datetime, *, records: int = 0, reason: str | None = None,
) -> Emit | None:
    """The audit record of ``event`` from ``source_topic``, or None for a topic that is not audited."""
    action = EVENT_ACTIONS.get(source_topic)
    if action is None:
        return None
    detail: dict[str, object] = {"source_topic": source_topic, "event_id": event.event_id, "records": records}
    if reason is not None:
        detail["reason"] = reason[:200]
    record = AuditEvent(
        event_id=derived_id(event.event_id, source_topic, "audit"),
        occurred_at=now,
        actor=f"event:{source_topic}",
        action=action,
        tenant_id=event.tenant_id,
        outcome=outcome,
        detail=detail,
    )
    return Emit(AUDIT_EVENTS, event.tenant_id, record)
