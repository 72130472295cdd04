from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from pipeline.compute.request import ComputeRequest


def _req(**kw: object) -> ComputeRequest:
    base: dict[str, object] = {
        "tenant_id": "acme", "resources": {"gpu": {"type": "H100", "count": 4}}, "duration_hours": 6
    }
    base.update(kw)
    return ComputeRequest.model_validate(base)


def test_valid_request_normalises_lists() -> None:
    req = _req(regions=["US-East-1", "us-east-1 "], exclude_providers=["Lambda"], purpose="training")
    assert req.regions == ["us-east-1"]
    assert req.exclude_providers == ["lambda"]
    assert req.gpu_type_key == "h100"
    assert req.resources.gpu_count == 4


def test_cpu_only_request() -> None:
    req = _req(resources={"vcpus": 32, "memory_gib": 64})
    assert req.gpu_type_key is None
    assert req.resources.gpu_count == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"resources": {}},  # nothing requested
        {"resources": {"gpu": {"type": "H100", "count": 0}}},
        {"resources": {"vcpus": -1}},
        {"duration_hours": 0},
        {"duration_hours": 24 * 365},
        {"max_price_per_hour": 0},
        {"regions": []},
        {"regions": ["us-east-1"], "exclude_regions": ["US-EAST-1"]},
        {"providers": ["lambda"], "exclude_providers": ["lambda"]},
        {"start_at": datetime(2030, 1, 1)},  # naive datetime
        {"tenant_id": "bad tenant"},
        {"purpose": "mining"},
        {"unknown": 1},
    ],
)
def test_invalid_requests_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _req(**changes)


def test_reservation_in_the_future() -> None:
    now = datetime.now(UTC)
    req = _req(start_at=now + timedelta(hours=2))
    assert req.starts_after(now)
    assert not _req().starts_after(now)


def test_request_round_trips_as_json() -> None:
    req = _req(start_at=datetime(2030, 1, 1, tzinfo=UTC), spot_allowed=True, max_price_per_hour=20)
    assert ComputeRequest.model_validate_json(req.model_dump_json()) == req
