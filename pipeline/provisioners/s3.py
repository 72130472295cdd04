"""S3 (MinIO API): one bucket per tenant with the tier's versioning, lifecycle rules and tags.

The bucket is data-bearing: ``delete`` removes it (with every object version) only with ``purge``.

Servers differ in which bucket sub-resources they implement (the local stack runs SeaweedFS). After
setting versioning, lifecycle or tags, ``apply`` reads the setting back; whatever the server refused
(``NotImplemented``) or did not keep is recorded as *unsupported by this server*, logged once, and left
out of drift detection by ``verify`` (which lists it in ``VerifyResult.unsupported``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter, Tags
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.lifecycleconfig import (
    AbortIncompleteMultipartUpload,
    Expiration,
    LifecycleConfig,
    NoncurrentVersionExpiration,
    Rule,
)
from minio.versioningconfig import OFF, SUSPENDED, VersioningConfig

from pipeline.provisioners.base import (
    BaseProvisioner,
    DeleteResult,
    ResourcePlan,
    TenantSpec,
    VerifyResult,
    blocking,
    diff,
)
from pipeline.provisioners.errors import PermanentError, ProvisioningError, TransientError
from pipeline.provisioners.naming import TenantNames
from pipeline.provisioners.tiers import TierConfig, TiersConfig

logger = logging.getLogger(__name__)

_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "OperationAborted"}
_UNSUPPORTED_CODES = {"NotImplemented", "MethodNotAllowed"}
#: The lifecycle rule ids this provisioner owns (one rule per action, so a server's partial support shows).
_RULE_IDS = {
    "expiration_days": "tenant-expire-current",
    "noncurrent_version_expiration_days": "tenant-expire-noncurrent",
    "abort_incomplete_multipart_upload_days": "tenant-abort-multipart",
}


def lifecycle_config(lifecycle: dict[str, int | None]) -> LifecycleConfig | None:
    """The bucket lifecycle configuration for the tier's lifecycle settings (None: no rules)."""
    rules = []
    everything = Filter(prefix="")
    if lifecycle.get("expiration_days"):
        rules.append(Rule(ENABLED, everything, _RULE_IDS["expiration_days"],
                          expiration=Expiration(days=lifecycle["expiration_days"])))
    if lifecycle.get("noncurrent_version_expiration_days"):
        rules.append(Rule(
            ENABLED, everything, _RULE_IDS["noncurrent_version_expiration_days"],
            noncurrent_version_expiration=NoncurrentVersionExpiration(
                noncurrent_days=lifecycle["noncurrent_version_expiration_days"]
            ),
        ))
    if lifecycle.get("abort_incomplete_multipart_upload_days"):
        rules.append(Rule(
            ENABLED, everything, _RULE_IDS["abort_incomplete_multipart_upload_days"],
            abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(
                days_after_initiation=lifecycle["abort_incomplete_multipart_upload_days"]
            ),
        ))
    return LifecycleConfig(rules) if rules else None


def lifecycle_settings(config: LifecycleConfig | None) -> dict[str, int | None]:
    """The lifecycle settings a bucket's configuration amounts to (enabled rules on the whole bucket)."""
    found: dict[str, int | None] = dict.fromkeys(_RULE_IDS)
    for rule in config.rules if config else []:
        if rule.status != ENABLED or (rule.rule_filter and rule.rule_filter.prefix):
            continue
        if rule.expiration and rule.expiration.days:
            found["expiration_days"] = rule.expiration.days
        if rule.noncurrent_version_expiration and rule.noncurrent_version_expiration.noncurrent_days:
            found["noncurrent_version_expiration_days"] = rule.noncurrent_version_expiration.noncurrent_days
        if rule.abort_incomplete_multipart_upload and rule.abort_incomplete_multipart_upload.days_after_initiation:
            found["abort_incomplete_multipart_upload_days"] = (
                rule.abort_incomplete_multipart_upload.days_after_initiation
            )
    return found


class S3Provisioner(BaseProvisioner):
    resource = "s3"
    data_bearing = True
    transient_exceptions = (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError)

    def __init__(
        self,
        tiers: TiersConfig,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        super().__init__(tiers)
        self._endpoint = endpoint
        self.address = f"{'https' if secure else 'http'}://{endpoint}"
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            maxsize=10,
        )
        self._client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                             region=region, http_client=http)
        #: Settings this server refused or did not keep ("lifecycle.noncurrent_version_expiration_days"...).
        self.unsupported: set[str] = set()
        self._lock = threading.Lock()

    @property
    def client(self) -> Minio:
        return self._client

    def _classify(self, exc: Exception) -> ProvisioningError:
        if isinstance(exc, S3Error) and exc.code in _TRANSIENT_CODES:
            return TransientError(f"{type(exc).__name__}: {exc}", resource=self.resource)
        return super()._classify(exc)

    # -- plan -------------------------------------------------------------------------------------------------

    def _plan(self, tenant: TenantSpec, names: TenantNames, tier: TierConfig) -> tuple[dict[str, str], dict[str, Any]]:
        tags = {**tier.s3.tags, "tenant": names.tenant_id, "tier": tier.name, "region": tenant.region}
        return (
            {"bucket": names.s3_bucket},
            {
                "versioning": tier.s3.versioning,
                "lifecycle": tier.s3.lifecycle.model_dump(),
                "tags": dict(sorted(tags.items())),
            },
        )

    # -- reading the bucket's state -----------------------------------------------------------------------

    def _optional(self, key: str, call: Any, *args: Any) -> Any:
        """A bucket sub-resource call; ``NotImplemented`` marks ``key`` unsupported and returns ``None``."""
        try:
            return call(*args)
        except S3Error as exc:
            if exc.code in _UNSUPPORTED_CODES:
                self._mark_unsupported(key, exc.code)
                return None
            raise

    def _mark_unsupported(self, key: str, why: str) -> None:
        with self._lock:
            if key in self.unsupported:
                return
            self.unsupported.add(key)
        logger.warning("S3 server at %s does not support %s (%s); left out of drift detection",
                       self._endpoint, key, why)

    def _read(self, bucket: str) -> dict[str, Any] | None:
        if not self._client.bucket_exists(bucket):
            return None
        state: dict[str, Any] = {}
        versioning = self._optional("versioning", self._client.get_bucket_versioning, bucket)
        state["versioning"] = versioning is not None and versioning.status == ENABLED
        state["versioning_status"] = versioning.status if versioning is not None else None
        state["lifecycle"] = lifecycle_settings(
            self._optional("lifecycle", self._client.get_bucket_lifecycle, bucket)
        )
        tags = self._optional("tags", self._client.get_bucket_tags, bucket)
        state["tags"] = dict(sorted(tags.items())) if tags else {}
        return state

    def _supported_view(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` without what this server is known not to support."""
        view = {key: (dict(value) if isinstance(value, dict) else value) for key, value in settings.items()}
        for key in self.unsupported:
            top, _, sub = key.partition(".")
            if sub and isinstance(view.get(top), dict):
                view[top].pop(sub, None)
            else:
                view.pop(top, None)
        return view

    # -- apply ----------------------------------------------------------------------------------------------

    def _apply_sync(self, plan: ResourcePlan) -> None:
        bucket = plan.names["bucket"]
        want = plan.settings
        if not self._client.bucket_exists(bucket):
            try:
                self._client.make_bucket(bucket)
                logger.debug("created bucket %s", bucket)
            except S3Error as exc:
                if exc.code == "BucketAlreadyExists":
                    raise PermanentError(f"bucket {bucket} exists and belongs to someone else") from exc
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise
        have = self._read(bucket)
        if have is None:
            raise TransientError(f"bucket {bucket} vanished while being configured")

        supported = self._supported_view(want)
        if "versioning" in supported and have["versioning"] != want["versioning"]:
            if want["versioning"] or have["versioning_status"] not in (None, OFF, SUSPENDED):
                status = ENABLED if want["versioning"] else SUSPENDED
                self._optional("versioning", self._client.set_bucket_versioning, bucket, VersioningConfig(status))

        if "lifecycle" in supported and diff(supported["lifecycle"], have["lifecycle"]):
            config = lifecycle_config(want["lifecycle"])
            if config is None:
                self._optional("lifecycle", self._client.delete_bucket_lifecycle, bucket)
            else:
                self._optional("lifecycle", self._client.set_bucket_lifecycle, bucket, config)

        if "tags" in supported and diff(want["tags"], have["tags"]):
            tags = Tags.new_bucket_tags()
            tags.update({**have["tags"], **want["tags"]})  # tags added by others are kept
            self._optional("tags", self._client.set_bucket_tags, bucket, tags)

        # Read back: what the server accepted but did not keep is unsupported by it.
        after = self._read(bucket) or {}
        for difference in diff(self._supported_view(want), after):
            self._mark_unsupported(difference.path, f"set {difference.expected!r}, read back {difference.actual!r}")

    async def _apply(self, tenant: TenantSpec, plan: ResourcePlan) -> ResourcePlan:
        await blocking(self._apply_sync, plan)
        if not self.unsupported:
            return plan
        settings = {**plan.settings, "unsupported_by_server": sorted(self.unsupported)}
        return plan.model_copy(update={"settings": settings})

    # -- verify -----------------------------------------------------------------------------------------------

    async def _verify(self, tenant: TenantSpec, plan: ResourcePlan) -> VerifyResult:
        bucket = plan.names["bucket"]
        have = await blocking(self._read, bucket)
        if have is None:
            return self._verify_result(plan, exists=False, missing=[f"bucket {bucket}"])
        return self._verify_result(
            plan,
            exists=True,
            differences=diff(self._supported_view(plan.settings), have),
            unsupported=sorted(self.unsupported),
        )

    # -- delete -----------------------------------------------------------------------------------------------

    def _purge_sync(self, bucket: str) -> bool:
        if not self._client.bucket_exists(bucket):
            return False
        while True:
            batch = [
                DeleteObject(obj.object_name or "", obj.version_id)
                for obj in self._client.list_objects(bucket, recursive=True, include_version=True)
            ]
            if not batch:
                break
            errors = list(self._client.remove_objects(bucket, batch))
            if errors:
                raise TransientError(f"could not remove {len(errors)} objects of {bucket}: {errors[0]}")
        self._client.remove_bucket(bucket)
        return True

    async def _delete(self, tenant: TenantSpec, plan: ResourcePlan, purge: bool) -> DeleteResult:
        bucket = plan.names["bucket"]
        item = f"bucket {bucket}"
        if not purge:
            exists = await blocking(self._client.bucket_exists, bucket)
            return self._delete_result(plan, kept=[item] if exists else [], absent=[] if exists else [item])
        removed = await blocking(self._purge_sync, bucket)
        return self._delete_result(plan, deleted=[item] if removed else [], absent=[] if removed else [item])
