from __future__ import annotations

import json

import pytest

from pipeline.events.decode import Invalid, decode
from pipeline.events.models import INPUT_EVENTS, ScalingRequest, TenantCreated
from pipeline.events.schema_files import SCHEMA_DIR, render, schema_documents


def test_committed_schema_files_match_the_records() -> None:
    for name, document in schema_documents().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{name} is missing: run python -m pipeline schemas"
        assert path.read_text() == render(document), f"{name} is stale: run python -m pipeline schemas"


def test_every_input_topic_has_a_schema_with_the_common_fields() -> None:
    for topic in INPUT_EVENTS:
        document = json.loads((SCHEMA_DIR / f"{topic}.v1.json").read_text())
        assert {"event_id", "tenant_id", "occurred_at"} <= set(document["required"])


GOOD = {"event_id": "e1", "tenant_id": "acme", "occurred_at": "2026-01-01T00:00:00+00:00", "name": "A", "tier": "free"}


def test_a_valid_event_decodes() -> None:
    result = decode(json.dumps(GOOD).encode(), TenantCreated)
    assert isinstance(result, TenantCreated) and result.tenant_id == "acme"


@pytest.mark.parametrize(
    ("raw", "reason", "mentions"),
    [
        (b"{nope", "bad-json", "JSON"),
        (b"[1, 2]", "schema", "JSON object"),
        (json.dumps({**GOOD, "tier": "gold"}).encode(), "schema", "tier"),
        (json.dumps({**GOOD, "occurred_at": "2026-01-01T00:00:00"}).encode(), "schema", "timezone"),
        (json.dumps({**GOOD, "tenant_id": "ACME; DROP"}).encode(), "schema", "tenant_id"),
        (json.dumps({**GOOD, "tenant_id": "a" * 300}).encode(), "schema", "tenant_id"),
        (None, "empty", "no value"),
    ],
)
def test_invalid_events_say_why(raw: bytes | None, reason: str, mentions: str) -> None:
    result = decode(raw, TenantCreated)
    assert isinstance(result, Invalid)
    assert result.reason == reason and mentions in result.detail


def test_scaling_request_needs_exactly_one_target() -> None:
    base = {"event_id": "s", "tenant_id": "acme", "occurred_at": "2026-01-01T00:00:00Z", "workload": "api"}
    assert isinstance(decode(json.dumps(base).encode(), ScalingRequest), Invalid)
    both = {**base, "desired_replicas": 3, "delta": 1}
    assert isinstance(decode(json.dumps(both).encode(), ScalingRequest), Invalid)
    assert isinstance(decode(json.dumps({**base, "delta": -2}).encode(), ScalingRequest), ScalingRequest)
