"""The stack's S3 server (SeaweedFS) behaves as the provisioner needs, through the ``minio`` client."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from minio import Minio
from minio.commonconfig import ENABLED, Filter, Tags
from minio.error import S3Error
from minio.lifecycleconfig import (
    AbortIncompleteMultipartUpload,
    Expiration,
    LifecycleConfig,
    NoncurrentVersionExpiration,
    Rule,
)
from minio.versioningconfig import VersioningConfig

pytestmark = pytest.mark.integration


def _client(exports: dict[str, str], secret: str | None = None) -> Minio:
    return Minio(
        exports["MINIO_ENDPOINT"],
        access_key=exports["MINIO_ACCESS_KEY"],
        secret_key=secret or exports["MINIO_SECRET_KEY"],
        secure=exports["MINIO_SECURE"] == "true",
    )


@pytest.fixture
def s3(s3_service: dict[str, str]) -> Minio:
    return _client(s3_service)


@pytest.fixture
def bucket(s3: Minio) -> Iterator[str]:
    name = f"tenant-{uuid.uuid4().hex[:12]}"
    s3.make_bucket(name)
    yield name
    for item in s3.list_objects(name, recursive=True, include_version=True):
        s3.remove_object(name, item.object_name, version_id=item.version_id)
    s3.remove_bucket(name)


def test_requests_must_be_signed_with_the_stack_identity(s3_service: dict[str, str]) -> None:
    with pytest.raises(S3Error) as refused:
        _client(s3_service, secret="not-the-secret").list_buckets()
    assert refused.value.code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}
    anonymous = Minio(s3_service["MINIO_ENDPOINT"], secure=False)
    with pytest.raises(S3Error):
        anonymous.make_bucket(f"anon-{uuid.uuid4().hex[:8]}")


def test_bucket_exists_and_objects_round_trip(s3: Minio, bucket: str) -> None:
    assert s3.bucket_exists(bucket)
    assert bucket in {b.name for b in s3.list_buckets()}
    s3.put_object(bucket, "hello.txt", io.BytesIO(b"hello"), 5)
    response = s3.get_object(bucket, "hello.txt")
    try:
        assert response.read() == b"hello"
    finally:
        response.close()
        response.release_conn()


def test_versioning_round_trips_and_keeps_versions(s3: Minio, bucket: str) -> None:
    s3.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    assert s3.get_bucket_versioning(bucket).status == ENABLED
    for body in (b"one", b"two"):
        s3.put_object(bucket, "doc.txt", io.BytesIO(body), len(body))
    versions = [o for o in s3.list_objects(bucket, include_version=True) if o.object_name == "doc.txt"]
    assert len(versions) == 2
    assert len({v.version_id for v in versions}) == 2


def test_bucket_tags_round_trip(s3: Minio, bucket: str) -> None:
    tags = Tags.new_bucket_tags()
    tags["tenant"] = "acme"
    tags["tier"] = "gold"
    s3.set_bucket_tags(bucket, tags)
    assert dict(s3.get_bucket_tags(bucket) or {}) == {"tenant": "acme", "tier": "gold"}
    s3.delete_bucket_tags(bucket)
    assert not s3.get_bucket_tags(bucket)


def test_lifecycle_configuration_round_trips(s3: Minio, bucket: str) -> None:
    s3.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    config = LifecycleConfig(
        [
            Rule(
                ENABLED,
                rule_filter=Filter(prefix=""),
                rule_id="expire-objects",
                expiration=Expiration(days=90),
            ),
            Rule(
                ENABLED,
                rule_filter=Filter(prefix=""),
                rule_id="expire-noncurrent",
                noncurrent_version_expiration=NoncurrentVersionExpiration(noncurrent_days=30),
            ),
            Rule(
                ENABLED,
                rule_filter=Filter(prefix=""),
                rule_id="abort-multipart",
                abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(days_after_initiation=7),
            ),
        ]
    )
    s3.set_bucket_lifecycle(bucket, config)
    stored = s3.get_bucket_lifecycle(bucket)
    assert stored is not None
    rules = {rule.rule_id: rule for rule in stored.rules}
    assert set(rules) == {"expire-objects", "expire-noncurrent", "abort-multipart"}
    assert all(rule.status == ENABLED for rule in rules.values())
    assert rules["expire-objects"].expiration is not None
    assert rules["expire-objects"].expiration.days == 90
    noncurrent = rules["expire-noncurrent"].noncurrent_version_expiration
    assert noncurrent is not None
    assert noncurrent.noncurrent_days == 30
    abort = rules["abort-multipart"].abort_incomplete_multipart_upload
    assert abort is not None
    assert abort.days_after_initiation == 7

    s3.delete_bucket_lifecycle(bucket)
    assert s3.get_bucket_lifecycle(bucket) is None
