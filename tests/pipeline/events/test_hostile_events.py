"""Hostile input on every event topic: the decoder refuses it with a reason and never raises; what it
accepts is finite and survives a round trip through JSON (so a stored copy reads back)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import bounded_json
from pipeline.contract.messages import INPUT_EVENTS
from pipeline.events.dead_letters import EXCERPT_BYTES, dead_letter_record
from pipeline.events.decode import Invalid, decode
from pipeline.events.models import DeadLetter, Event
from tests.pipeline.events.hostile import NON_FINITE_LITERALS, deep, document, hostile_document

COMMON = {"event_id": "e-1", "tenant_id": "acme", "occurred_at": "2026-01-01T00:00:00+00:00"}
#: One valid event per input topic.
VALID: dict[str, dict[str, Any]] = {
    "tenant-created-events": {**COMMON, "name": "Acme", "tier": "standard", "region": "eu-west-1"},
    "tenant-deleted-events": {**COMMON, "purge": True},
    "user-created-events": {**COMMON, "user_id": "u1", "email": "a@b.io", "roles": ["admin"]},
    "user-deleted-events": {**COMMON, "user_id": "u1"},
    "resource-anomaly-events": {**COMMON, "resource_type": "pod", "resource_id": "p1", "anomaly_type": "cpu",
                                "severity": "high", "value": 3.5},
    "scaling-request-events": {**COMMON, "workload": "api", "desired_replicas": 3},
    "quota-exceeded-events": {**COMMON, "resource": "cpu_cores", "used": 5.0, "limit": 4.0},
    "resource-metrics": {**COMMON, "workload": "api", "cpu_cores": 1.5, "memory_gib": 2.0, "gpus": 0.0,
                         "requests_per_s": 10.0, "replicas": 2},
    "compute-request-events": {**COMMON, "resources": {"gpu": {"type": "H100", "count": 1}},
                               "duration_hours": 2, "max_price_per_hour": 10.0},
}
#: Every numeric field of each input event (where a non-finite number could get in).
NUMERIC_FIELDS: list[tuple[str, str]] = [
    ("resource-anomaly-events", "value"),
    ("scaling-request-events", "desired_replicas"),
    ("quota-exceeded-events", "used"),
    ("quota-exceeded-events", "limit"),
    ("resource-metrics", "cpu_cores"),
    ("resource-metrics", "memory_gib"),
    ("resource-metrics", "gpus"),
    ("resource-metrics", "requests_per_s"),
    ("resource-metrics", "replicas"),
    ("compute-request-events", "duration_hours"),
    ("compute-request-events", "max_price_per_hour"),
]
REASONS = {"empty", "bad-json", "schema", "too-large", "too-deep"}
EXAMPLES = 150
CASES = {"count": 0}


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    return True


def check_decoded(raw: bytes | str | None, model: type[Event]) -> Event | Invalid:
    """The invariant of the decoder on any input."""
    CASES["count"] += 1
    result = decode(raw, model)  # must not raise
    if isinstance(result, Invalid):
        assert result.reason in REASONS and result.detail
        assert len(result.detail) < 20_000
        return result
    assert isinstance(result, model)
    assert _all_finite(result.model_dump())
    assert model.model_validate_json(result.model_dump_json()) == result
    return result


def test_every_valid_example_decodes() -> None:
    assert set(VALID) == set(INPUT_EVENTS)
    for topic, valid in VALID.items():
        assert isinstance(decode(json.dumps(valid).encode(), INPUT_EVENTS[topic]), INPUT_EVENTS[topic])


@pytest.mark.parametrize(("topic", "field"), NUMERIC_FIELDS)
@pytest.mark.parametrize("literal", [*NON_FINITE_LITERALS, "1e300", "1e20"])
def test_non_finite_and_huge_numbers_are_refused_in_every_numeric_field(topic: str, field: str, literal: str) -> None:
    fields = {k: json.dumps(v) for k, v in VALID[topic].items()}
    fields[field] = literal
    result = check_decoded(document(fields).encode(), INPUT_EVENTS[topic])
    assert isinstance(result, Invalid) and result.reason == "schema", result
    assert field in result.detail


def test_a_non_finite_quota_in_a_quota_update_request_is_refused() -> None:
    from pipeline.events.models import QuotaUpdateRequested

    raw = document({**{k: json.dumps(v) for k, v in COMMON.items()}, "actor": '"alice"', "quota": '{"gpus": 1e999}'})
    result = check_decoded(raw.encode(), QuotaUpdateRequested)
    assert isinstance(result, Invalid) and "quota" in result.detail


@pytest.mark.parametrize("topic", sorted(INPUT_EVENTS))
@pytest.mark.parametrize("raw", ["[" * 5000, '{"a":' * 5000, "[" * 100_000, deep(200), deep(33, "{")])
def test_deep_nesting_is_refused_without_recursion(topic: str, raw: str) -> None:
    for value in (raw, raw.encode()):
        result = check_decoded(value, INPUT_EVENTS[topic])
        assert isinstance(result, Invalid)
    fields = {k: json.dumps(v) for k, v in VALID[topic].items()}
    fields["extra"] = "[" * 5000
    assert isinstance(check_decoded(document(fields).encode(), INPUT_EVENTS[topic]), Invalid)


def test_an_oversized_message_is_refused_before_parsing_and_its_dead_letter_stays_small() -> None:
    raw = b'{"junk": "' + b"x" * 800_000 + b'"'  # invalid and 800 KB
    result = check_decoded(raw, INPUT_EVENTS["resource-metrics"])
    assert isinstance(result, Invalid) and result.reason == "too-large"
    from datetime import UTC, datetime

    letter = dead_letter_record("resource-metrics", raw, b"acme", result.reason, result.detail * 1000,
                                datetime.now(UTC))
    encoded = letter.model_dump_json().encode()
    assert len(encoded) < 16 * 1024 < 1_000_000
    assert letter.original_truncated and letter.original_length == len(raw)
    assert len(letter.original_base64) <= EXCERPT_BYTES * 4 // 3 + 4
    assert DeadLetter.model_validate_json(encoded).reason == "too-large"


def test_a_valid_event_of_any_size_up_to_the_limit_is_not_refused_for_its_size() -> None:
    valid = {**VALID["tenant-created-events"], "padding": " " * (bounded_json.MAX_DOCUMENT_BYTES - 400)}
    raw = json.dumps(valid).encode()
    assert len(raw) <= bounded_json.MAX_DOCUMENT_BYTES
    assert not isinstance(check_decoded(raw, INPUT_EVENTS["tenant-created-events"]), Invalid)


@pytest.mark.parametrize("topic", sorted(INPUT_EVENTS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_variants_of_every_event_are_refused_or_accepted_finite(topic: str, data: st.DataObject) -> None:
    raw = data.draw(hostile_document(VALID[topic]))
    check_decoded(raw, INPUT_EVENTS[topic])


@settings(max_examples=EXAMPLES, deadline=None)
@given(raw=st.one_of(st.binary(max_size=2000), st.text(max_size=2000)))
def test_arbitrary_bytes_and_text_never_raise(raw: bytes | str) -> None:
    for model in INPUT_EVENTS.values():
        check_decoded(raw, model)

