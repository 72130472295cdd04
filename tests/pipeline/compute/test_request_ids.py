"""Request ids derived from an Idempotency-Key or a request name, and the canonical request fingerprint."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.compute.request import ComputeRequest
from pipeline.compute.request_ids import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    REQUEST_ID_PATTERN,
    REQUEST_NAME_PATTERN,
    idempotent_request_id,
    named_request_id,
    tenant_of,
    valid_idempotency_key,
)
from pipeline.events.models import TENANT_ID_PATTERN

KEYS = st.from_regex(IDEMPOTENCY_KEY_PATTERN, fullmatch=True)
TENANTS = st.from_regex(TENANT_ID_PATTERN, fullmatch=True).filter(lambda t: len(t) <= 40)
_KEY_CHARS = re.compile(r"[A-Za-z0-9._:-]")


@given(tenant=TENANTS, key=KEYS)
def test_a_key_gives_one_well_formed_id_of_its_tenant(tenant: str, key: str) -> None:
    request_id = idempotent_request_id(tenant, key)
    assert re.fullmatch(REQUEST_ID_PATTERN, request_id)
    assert tenant_of(request_id) == tenant
    assert idempotent_request_id(tenant, key) == request_id  # deterministic: a retry finds the same record


@given(tenant=TENANTS, other=TENANTS, key=KEYS, other_key=KEYS)
def test_keys_are_scoped_per_tenant(tenant: str, other: str, key: str, other_key: str) -> None:
    if tenant != other:
        assert idempotent_request_id(tenant, key) != idempotent_request_id(other, key)
    if key != other_key:
        assert idempotent_request_id(tenant, key) != idempotent_request_id(tenant, other_key)


@given(key=st.text(max_size=200))
def test_only_bounded_keys_of_the_safe_alphabet_are_accepted(key: str) -> None:
    expected = (
        1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        and key[0].isascii() and key[0].isalnum()
        and all(_KEY_CHARS.fullmatch(c) for c in key)
    )
    assert valid_idempotency_key(key) is expected
    if not expected:
        with pytest.raises(ValueError):
            idempotent_request_id("acme", key)


def test_the_longest_key_and_a_uuid_are_accepted_and_one_more_character_is_not() -> None:
    assert valid_idempotency_key("5f0c6f4e-8d1e-4c55-9a59-3d1b2f1f7a10")
    assert valid_idempotency_key("a" * MAX_IDEMPOTENCY_KEY_LENGTH)
    assert not valid_idempotency_key("a" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1))
    assert not valid_idempotency_key("a\nb") and not valid_idempotency_key(" a") and not valid_idempotency_key("")


@given(name=st.from_regex(REQUEST_NAME_PATTERN, fullmatch=True))
def test_a_name_is_the_id(name: str) -> None:
    request_id = named_request_id("acme", name)
    assert request_id == f"acme.{name}" and tenant_of(request_id) == "acme"


# -- the fingerprint ---------------------------------------------------------------------------------------

BODIES = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["acme", "globex"]),
        "resources": st.fixed_dictionaries(
            {"gpu": st.none() | st.fixed_dictionaries({"type": st.sampled_from(["H100", "A100"]),
                                                        "count": st.integers(1, 8)}),
             "vcpus": st.integers(1, 64)}),
        "duration_hours": st.integers(1, 48),
        "spot_allowed": st.booleans(),
        "providers": st.none() | st.lists(st.sampled_from(["lambda", "nebius", "verda"]), min_size=1, max_size=3,
                                          unique=True),
        "purpose": st.sampled_from(["training", "inference", "other"]),
    }
)


def respelled(body: dict[str, Any]) -> dict[str, Any]:
    """The same request written differently: float numbers, upper-case provider names, explicit defaults."""
    providers = body["providers"]
    return {**body, "duration_hours": float(body["duration_hours"]),
            "providers": [p.upper() for p in providers] if providers is not None else None,
            "exclude_regions": [], "max_price_per_hour": None, "start_at": None}


@given(body=BODIES)
def test_the_same_request_spelled_differently_has_the_same_fingerprint(body: dict[str, Any]) -> None:
    assert ComputeRequest.model_validate(body).fingerprint() == ComputeRequest.model_validate(
        respelled(body)).fingerprint()


@given(body=BODIES, other=BODIES)
def test_different_requests_have_different_fingerprints(body: dict[str, Any], other: dict[str, Any]) -> None:
    first, second = ComputeRequest.model_validate(body), ComputeRequest.model_validate(other)
    assert (first.fingerprint() == second.fingerprint()) is (first == second)
