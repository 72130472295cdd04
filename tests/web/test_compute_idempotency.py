"""The pure parts of a retryable ``POST /compute/provision``: the Idempotency-Key header and "is this the same
request" (the routes themselves: tests/web/test_compute.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.compute.lifecycle import ComputeRecord
from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import IDEMPOTENCY_KEY_PATTERN, valid_idempotency_key
from tests.pipeline.compute.test_request_ids import BODIES, respelled
from web.compute.idempotency import key_reused, parse_idempotency_key, request_id_for, same_request
from web.compute.models import ComputeProvisionRequest
from web.errors import ApiError

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


@given(values=st.lists(st.text(max_size=150) | st.from_regex(IDEMPOTENCY_KEY_PATTERN, fullmatch=True), max_size=3))
def test_the_header_gives_a_valid_key_or_a_400(values: list[str]) -> None:
    try:
        key = parse_idempotency_key(values)
    except ApiError as exc:
        assert exc.status == 400 and exc.code == "invalid-idempotency-key"
        assert len(values) > 1 or not valid_idempotency_key(values[0])
        return
    if not values:
        assert key is None
    else:
        assert len(values) == 1 and key == values[0] and valid_idempotency_key(key)


@given(body=BODIES, other=BODIES, key=st.from_regex(IDEMPOTENCY_KEY_PATTERN, fullmatch=True),
       stored_hash=st.booleans())
def test_same_key_and_body_is_the_same_request_and_another_body_is_a_reuse(
    body: dict[str, Any], other: dict[str, Any], key: str, stored_hash: bool
) -> None:
    first = ComputeProvisionRequest.model_validate(body).compute_request()
    request_id = request_id_for(first.tenant_id, None, key)
    record = ComputeRecord.new(request_id, first, NOW)
    if not stored_hash:  # a record written before the hash was stored
        record = record.model_copy(update={"request_hash": None})
    retry = ComputeProvisionRequest.model_validate(respelled(body)).compute_request()
    assert request_id_for(retry.tenant_id, None, key) == request_id and same_request(record, retry)
    second = ComputeRequest.model_validate({**other, "tenant_id": first.tenant_id})
    assert same_request(record, second) is (second == first)
    assert key_reused(request_id).status == 422


@pytest.mark.parametrize(("name", "key", "expected"), [
    ("nightly", None, "acme.nightly"), ("nightly", "k1", "acme.nightly"), (None, None, None)])
def test_a_name_wins_over_a_key_and_without_either_the_id_is_fresh(
    name: str | None, key: str | None, expected: str | None
) -> None:
    first, second = request_id_for("acme", name, key), request_id_for("acme", name, key)
    if expected is None:
        assert first != second and first.startswith("acme.c")
    else:
        assert first == second == expected
