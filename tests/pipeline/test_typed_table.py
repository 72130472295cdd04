"""A record that fails validation on read is absent (a poisoned changelog must not stop a worker), and a
non-finite number is never written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.events.models import QuotaResource
from pipeline.provisioners.tiers import Quota
from pipeline.tenants.models import OverQuota, QuotaRecord
from pipeline.typed_table import TypedTable

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def quota_record(tenant_id: str, used: float = 5.0) -> QuotaRecord:
    return QuotaRecord(
        tenant_id=tenant_id, limits=Quota(cpu_cores=4, memory_gib=8, gpus=0, storage_gib=10),
        over_quota={QuotaResource.CPU_CORES: OverQuota(used=used, limit=4, since=NOW, event_id="e1")},
        updated_at=NOW, updated_by="test",
    )


def test_a_poisoned_record_reads_as_absent_and_the_others_still_read() -> None:
    backend: dict[str, Any] = {}
    table = TypedTable(backend, QuotaRecord, "quotas")
    table.put("good", quota_record("good"))
    poisoned = quota_record("bad").model_dump(mode="json")
    poisoned["over_quota"]["cpu_cores"]["used"] = None  # what an infinite 'used' became in the changelog
    backend["bad"] = poisoned

    assert table.get("bad") is None
    assert "bad" not in table
    assert [key for key, _ in table.items()] == ["good"]
    assert table.get("good") == quota_record("good")

    table.put("bad", quota_record("bad"))  # the next write heals the key
    assert table.get("bad") == quota_record("bad")


@pytest.mark.parametrize("used", [float("inf"), float("nan")])
def test_a_non_finite_number_is_never_written(used: float) -> None:
    backend: dict[str, Any] = {}
    table = TypedTable(backend, QuotaRecord, "quotas")
    record = quota_record("acme").model_copy(
        update={"over_quota": {
            QuotaResource.CPU_CORES: OverQuota.model_construct(used=used, limit=4, since=NOW, event_id="e")
        }}
    )
    with pytest.raises(ValueError, match="non-finite"):
        table.put("acme", record)
    assert backend == {}
