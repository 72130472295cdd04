from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from pipeline.contract.messages import INPUT_EVENTS, OUTPUT_RECORDS
from pipeline.contract.records import ScalingCommand
from pipeline.contract.schema_files import SCHEMA_DIR, render, schema_documents
from pipeline.contract.topics import DEAD_LETTER_EVENTS, INPUT_TOPICS, OUTPUT_TOPICS, SCALING_EVENTS
from pipeline.events.decode import Invalid, decode
from pipeline.events.models import ScalingRequest, TenantCreated


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


def test_every_topic_that_leaves_the_service_has_a_committed_schema() -> None:
    for topic in (*OUTPUT_TOPICS, DEAD_LETTER_EVENTS):
        assert (SCHEMA_DIR / f"{topic}.v1.json").exists(), f"{topic} has no schema file"
    assert set(OUTPUT_RECORDS) == {*OUTPUT_TOPICS, DEAD_LETTER_EVENTS}
    assert set(INPUT_EVENTS) == set(INPUT_TOPICS)


def scaling_events_schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / f"{SCALING_EVENTS}.v1.json").read_text()))


def test_a_scaling_command_matches_the_scaling_events_schema_and_an_unknown_kind_does_not() -> None:
    command = ScalingCommand(
        command_id="c1", tenant_id="acme", workload="api", desired_replicas=3, delta=None, reason="r",
        status="accepted", issued_at=datetime(2026, 1, 1, tzinfo=UTC), cause_event_id="e1",
    )
    document = json.loads(command.model_dump_json())
    scaling_events_schema().validate(document)
    assert not scaling_events_schema().is_valid({**document, "kind": "scaling-mystery"})
    assert not scaling_events_schema().is_valid({k: v for k, v in document.items() if k != "command_id"})
