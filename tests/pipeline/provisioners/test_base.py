"""The value types of the interface: tenant specs, plans, verify results, diffs, error classes."""

from __future__ import annotations

import json

import pytest

from pipeline.provisioners.base import (
    Difference,
    ResourcePlan,
    TenantSpec,
    VerifyResult,
    diff,
    http_error,
)
from pipeline.provisioners.errors import PermanentError, TransientError, UnsafeNameError
from pipeline.provisioners.tiers import Quota, QuotaOverride, load_tiers


def _spec(**fields: object) -> TenantSpec:
    values: dict[str, object] = {"tenant_id": "acme", "name": "Acme", "tier": "free", "owner_user_id": "alice"}
    return TenantSpec.model_validate({**values, **fields})


def test_a_command_spec_is_accepted_as_it_is() -> None:
    spec = TenantSpec.model_validate({
        "tenant_id": "acme", "name": "Acme", "tier": "free", "region": None, "owner_user_id": None,
        "quota": {"cpu_cores": 4, "memory_gib": 8, "gpus": 0, "storage_gib": 10}, "purge": True,
    })
    assert spec.region == "local"
    assert spec.owner_user_id is None
    assert spec.effective_quota(load_tiers().tier("free")) == Quota(cpu_cores=4, memory_gib=8, gpus=0, storage_gib=10)


def test_effective_quota_is_the_tier_quota_without_overrides() -> None:
    tier = load_tiers().tier("standard")
    assert _spec().effective_quota(tier) == tier.quota
    assert _spec(quota=QuotaOverride(gpus=1)).effective_quota(tier).gpus == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant_id": "Acme"},
        {"tenant_id": "acme;drop"},
        {"owner_user_id": "alice bob"},
        {"owner_user_id": "../admin"},
        {"region": "EU West"},
    ],
)
def test_names_refuses_unsafe_fields(fields: dict[str, object]) -> None:
    with pytest.raises(UnsafeNameError):
        _spec(**fields).names()


def test_display_name_may_be_unicode_but_not_control_characters() -> None:
    assert _spec(name="Ünïcødé GmbH ✓").names().tenant_id == "acme"
    with pytest.raises(PermanentError):
        _spec(name="line\nbreak").names()


def test_diff_checks_expected_keys_recursively() -> None:
    expected = {"a": 1, "b": {"c": 2, "d": [1, 2]}}
    actual = {"a": 1, "b": {"c": 3, "d": [1, 2], "extra": True}, "other": 0}
    assert diff(expected, actual) == [Difference(path="b.c", expected=2, actual=3)]
    assert diff(expected, None) == [
        Difference(path="a", expected=1, actual=None),
        Difference(path="b", expected={"c": 2, "d": [1, 2]}, actual=None),
    ]


def test_verify_result_ok_and_drifted() -> None:
    ok = VerifyResult(resource="s3", tenant_id="acme", exists=True, unsupported=["tags"])
    assert ok.ok and not ok.drifted
    gone = VerifyResult(resource="s3", tenant_id="acme", exists=False, missing=["bucket tenant-acme"])
    assert gone.drifted and "missing: bucket tenant-acme" in gone.details
    changed = VerifyResult(resource="s3", tenant_id="acme", exists=True,
                           differences=[Difference(path="versioning", expected=True, actual=False)])
    assert changed.drifted
    dumped = json.loads(changed.model_dump_json())
    assert dumped["ok"] is False and dumped["drifted"] is True


def test_resource_plans_are_json_serialisable() -> None:
    plan = ResourcePlan(resource="s3", tenant_id="acme", tier="free", data_bearing=True,
                        names={"bucket": "tenant-acme"}, settings={"versioning": False, "lifecycle": {"x": None}})
    assert ResourcePlan.model_validate_json(plan.model_dump_json()) == plan


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, TransientError), (503, TransientError), (429, TransientError), (409, TransientError),
     (408, TransientError), (400, PermanentError), (401, PermanentError), (403, PermanentError),
     (404, PermanentError), (422, PermanentError)],
)
def test_http_status_classification(status: int, kind: type[Exception]) -> None:
    error = http_error("pulsar", status, "PUT /admin/v2/tenants/x", "body")
    assert type(error) is kind
    assert error.retryable is (kind is TransientError)
    assert str(error).startswith("pulsar: PUT /admin/v2/tenants/x: HTTP")
