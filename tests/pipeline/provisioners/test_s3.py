"""The S3 provisioner: pure lifecycle mapping, and against the real local S3 server (SeaweedFS)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from minio import Minio

from pipeline.provisioners.base import TenantSpec
from pipeline.provisioners.s3 import S3Provisioner, lifecycle_config, lifecycle_settings
from pipeline.provisioners.tiers import TiersConfig
from tests.pipeline.provisioners.conftest import (
    applied,
    assert_deletes_only_this_tenant,
    assert_kept_without_purge,
    deleted_after,
    provisioner_fixture,
    settings_from,
)


@pytest.mark.parametrize(
    "lifecycle",
    [
        dict(expiration_days=30, noncurrent_version_expiration_days=None, abort_incomplete_multipart_upload_days=1),
        dict(expiration_days=None, noncurrent_version_expiration_days=90, abort_incomplete_multipart_upload_days=7),
        dict(expiration_days=1, noncurrent_version_expiration_days=2, abort_incomplete_multipart_upload_days=3),
    ],
)
def test_lifecycle_settings_round_trip_through_the_s3_configuration(lifecycle: dict[str, int | None]) -> None:
    config = lifecycle_config(lifecycle)
    assert config is not None
    assert lifecycle_settings(config) == lifecycle
    assert all(rule.rule_filter is not None and rule.rule_filter.prefix == "" for rule in config.rules)


def test_no_lifecycle_rules_means_no_configuration() -> None:
    empty = dict.fromkeys(("expiration_days", "noncurrent_version_expiration_days",
                           "abort_incomplete_multipart_upload_days"))
    assert lifecycle_config(empty) is None
    assert lifecycle_settings(None) == empty


# -- against the real server -------------------------------------------------------------------------------


provisioner = provisioner_fixture(S3Provisioner)


@pytest.fixture
def client(s3_service: dict[str, str]) -> Minio:
    settings = settings_from(s3_service)
    return Minio(settings.minio_endpoint, access_key=settings.minio_access_key,
                 secret_key=settings.minio_secret_key.get_secret_value(), secure=settings.minio_secure)


def _state(client: Minio, bucket: str) -> dict[str, Any]:
    tags = client.get_bucket_tags(bucket)
    return {
        "versioning": client.get_bucket_versioning(bucket).status,
        "lifecycle": lifecycle_settings(client.get_bucket_lifecycle(bucket)),
        "tags": dict(tags) if tags else {},
    }


@pytest.mark.integration
@pytest.mark.parametrize("tier", ["free", "standard", "enterprise"])
async def test_apply_creates_the_bucket_with_the_tier_settings(
    provisioner: S3Provisioner, client: Minio, make_tenant: Callable[..., TenantSpec], tiers: TiersConfig, tier: str
) -> None:
    tenant = make_tenant(tier)
    bucket = tenant.names().s3_bucket
    async with deleted_after(provisioner, tenant):
        plan = await provisioner.apply(tenant)
        assert plan.names == {"bucket": bucket}
        config = tiers.tier(tier).s3
        state = _state(client, bucket)
        assert client.bucket_exists(bucket)
        # A bucket that was never versioned reports no status (SeaweedFS) or "Off" (MinIO).
        assert state["versioning"] in (("Enabled",) if config.versioning else (None, "Off"))
        assert state["lifecycle"] == config.lifecycle.model_dump()
        assert state["tags"] == {**config.tags, "tenant": tenant.tenant_id, "tier": tier, "region": "local"}
        assert provisioner.unsupported == set(), "SeaweedFS is expected to keep every setting we use"
        assert (await provisioner.verify(tenant)).ok


@pytest.mark.integration
async def test_apply_twice_changes_nothing(
    provisioner: S3Provisioner, client: Minio, make_tenant: Callable[..., TenantSpec],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = make_tenant("standard")
    bucket = tenant.names().s3_bucket
    async with deleted_after(provisioner, tenant):
        first = await provisioner.apply(tenant)
        before = _state(client, bucket)
        writes: list[str] = []

        def spy(method: str) -> Callable[..., Any]:
            original = getattr(provisioner.client, method)

            def call(*args: Any, **kwargs: Any) -> Any:
                writes.append(method)
                return original(*args, **kwargs)

            return call

        for method in ("make_bucket", "set_bucket_versioning", "set_bucket_lifecycle", "set_bucket_tags",
                       "delete_bucket_lifecycle"):
            monkeypatch.setattr(provisioner.client, method, spy(method))
        try:
            second = await provisioner.apply(tenant)
        finally:
            monkeypatch.undo()
        assert writes == []
        assert second == first
        assert _state(client, bucket) == before
        assert [b.name for b in client.list_buckets()].count(bucket) == 1


@pytest.mark.integration
async def test_verify_detects_drift_and_apply_repairs_it(
    provisioner: S3Provisioner, client: Minio, make_tenant: Callable[..., TenantSpec]
) -> None:
    tenant = make_tenant("standard")
    bucket = tenant.names().s3_bucket
    async with applied(provisioner, tenant):
        client.delete_bucket_lifecycle(bucket)
        client.delete_bucket_tags(bucket)
        drift = await provisioner.verify(tenant)
        assert drift.drifted and drift.exists
        paths = {d.path for d in drift.differences}
        assert {"lifecycle.noncurrent_version_expiration_days", "lifecycle.abort_incomplete_multipart_upload_days",
                "tags.tenant", "tags.tier"} <= paths
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok

        client.remove_bucket(bucket)  # deleted behind our back
        gone = await provisioner.verify(tenant)
        assert gone.drifted and not gone.exists and gone.missing == [f"bucket {bucket}"]
        await provisioner.apply(tenant)
        assert (await provisioner.verify(tenant)).ok


@pytest.mark.integration
async def test_tier_change_converges_the_bucket(
    provisioner: S3Provisioner, client: Minio, make_tenant: Callable[..., TenantSpec], tiers: TiersConfig
) -> None:
    free = make_tenant("free")
    bucket = free.names().s3_bucket
    async with applied(provisioner, free):
        upgraded = free.model_copy(update={"tier": "enterprise"})
        assert (await provisioner.verify(upgraded)).drifted
        await provisioner.apply(upgraded)
        assert _state(client, bucket)["versioning"] == "Enabled"
        assert _state(client, bucket)["lifecycle"] == tiers.tier("enterprise").s3.lifecycle.model_dump()
        downgraded = free
        await provisioner.apply(downgraded)
        assert _state(client, bucket)["versioning"] == "Suspended"  # S3 cannot switch versioning back off
        assert (await provisioner.verify(downgraded)).ok


@pytest.mark.integration
async def test_delete_keeps_the_bucket_unless_purge(
    provisioner: S3Provisioner, client: Minio, make_tenant: Callable[..., TenantSpec]
) -> None:
    async def buckets(of: TenantSpec) -> int:
        return 1 if client.bucket_exists(of.names().s3_bucket) else 0

    tenant = make_tenant("standard")  # versioned: purge must remove every version
    bucket = tenant.names().s3_bucket
    other = make_tenant("standard")
    async with applied(provisioner, tenant, other):
        for content in (b"v1", b"v2"):
            client.put_object(bucket, "data/file.txt", io.BytesIO(content), len(content))
        client.remove_object(bucket, "data/file.txt")  # leaves a delete marker

        await assert_kept_without_purge(provisioner, tenant, f"bucket {bucket}", buckets)
        versions = list(client.list_objects(bucket, recursive=True, include_version=True))
        assert len(versions) >= 2

        await assert_deletes_only_this_tenant(provisioner, tenant, other, [f"bucket {bucket}"], buckets, purge=True)
