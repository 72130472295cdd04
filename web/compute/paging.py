"""The listing of a tenant's compute requests: newest first, a page at a time, with an opaque cursor."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.request_ids import tenant_of
from web.compute.models import ComputeRequestList, ComputeRequestSummary, ListQuery
from web.errors import ApiError


def encode_cursor(record: ComputeRecord) -> str:
    """An opaque cursor after ``record`` in the listing's order (newest first)."""
    raw = json.dumps([record.created_at.isoformat(), record.request_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, request_id) a cursor of :func:`encode_cursor` names; 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, request_id = json.loads(raw)
        at = datetime.fromisoformat(created)
        if at.tzinfo is None or not isinstance(request_id, str) or tenant_of(request_id) is None:
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        # well-formed by the document (the pattern), but not a cursor of this API: its own code, since no JSON
        # Schema can tell a cursor this API issued from any other string
        raise ApiError(400, "invalid-cursor", "the cursor is not one this API returned; start again without it",
                       {"parameter": "cursor"}) from None
    return at, request_id


def _newest_first(record: ComputeRecord) -> tuple[datetime, str]:
    return record.created_at, record.request_id


def page_of(records: list[ComputeRecord], query: ListQuery) -> ComputeRequestList:
    """The page ``query`` asks for of one tenant's records: newest first (ties by id), after the cursor."""
    assert query.tenant_id is not None
    chosen = [r for r in records if query.state is None or r.state is query.state]
    chosen.sort(key=_newest_first, reverse=True)
    if query.cursor is not None:
        after = decode_cursor(query.cursor)
        chosen = [r for r in chosen if _newest_first(r) < after]
    page = chosen[:query.limit]
    more = len(chosen) > query.limit
    return ComputeRequestList(tenant_id=query.tenant_id, items=[ComputeRequestSummary.of(r) for r in page],
                              limit=query.limit, next_cursor=encode_cursor(page[-1]) if more and page else None)
