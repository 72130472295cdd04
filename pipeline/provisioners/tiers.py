"""The tier-driven configuration of tenant resources, read from ``tiers.yaml`` into validated models.

The file next to this module is the default; the ``TIERS_FILE`` setting points at another one. See the
comments in ``tiers.yaml`` for the meaning and units of each value.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.numbers import MAX_QUANTITY, Quantity
from pipeline.provisioners.errors import PermanentError, UnknownTierError

DEFAULT_TIERS_FILE = Path(__file__).with_name("tiers.yaml")

_K8S_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", re.ASCII)
_TAG_KEY = re.compile(r"[A-Za-z0-9 _.:/=+@-]{1,128}", re.ASCII)
_TAG_VALUE = re.compile(r"[A-Za-z0-9 _.:/=+@-]{0,256}", re.ASCII)
_DATACENTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Quota(_Model):
    """A tenant's resource quota: the quota table's numbers and the Kubernetes ResourceQuota's."""

    cpu_cores: Quantity
    memory_gib: int = Field(ge=0, le=int(MAX_QUANTITY))
    gpus: int = Field(ge=0, le=int(MAX_QUANTITY))
    storage_gib: int = Field(ge=0, le=int(MAX_QUANTITY))


class QuotaOverride(_Model):
    """Per-tenant changes to the tier's quota; ``None`` keeps the tier's value."""

    cpu_cores: Quantity | None = None
    memory_gib: int | None = Field(default=None, ge=0, le=int(MAX_QUANTITY))
    gpus: int | None = Field(default=None, ge=0, le=int(MAX_QUANTITY))
    storage_gib: int | None = Field(default=None, ge=0, le=int(MAX_QUANTITY))

    def apply_to(self, quota: Quota) -> Quota:
        return quota.model_copy(update=self.model_dump(exclude_none=True))


class CassandraTier(_Model):
    strategy: Literal["SimpleStrategy", "NetworkTopologyStrategy"]
    replication_factor: int | None = Field(default=None, ge=1)
    datacenters: dict[str, int] | None = None
    durable_writes: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> CassandraTier:
        if self.strategy == "SimpleStrategy":
            if self.replication_factor is None or self.datacenters is not None:
                raise ValueError("SimpleStrategy takes replication_factor and no datacenters")
        else:
            if not self.datacenters or self.replication_factor is not None:
                raise ValueError("NetworkTopologyStrategy takes datacenters {name: factor} and no replication_factor")
            for dc, factor in self.datacenters.items():
                if _DATACENTER.fullmatch(dc) is None or factor < 1:
                    raise ValueError(f"bad datacenter entry {dc!r}: {factor!r}")
        return self

    def replication(self) -> dict[str, str]:
        """The keyspace's replication map, as Cassandra reports it back (short class name, string values)."""
        if self.strategy == "SimpleStrategy":
            return {"class": "SimpleStrategy", "replication_factor": str(self.replication_factor)}
        assert self.datacenters is not None
        return {"class": "NetworkTopologyStrategy", **{dc: str(n) for dc, n in sorted(self.datacenters.items())}}


class S3Lifecycle(_Model):
    expiration_days: int | None = Field(default=None, ge=1)
    noncurrent_version_expiration_days: int | None = Field(default=None, ge=1)
    abort_incomplete_multipart_upload_days: int | None = Field(default=None, ge=1)


class S3Tier(_Model):
    versioning: bool
    lifecycle: S3Lifecycle
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        if len(tags) > 40:
            raise ValueError("at most 40 bucket tags (S3 allows 50; the provisioner adds its own)")
        for key, value in tags.items():
            if _TAG_KEY.fullmatch(key) is None or _TAG_VALUE.fullmatch(value) is None:
                raise ValueError(f"bad bucket tag {key!r}={value!r}")
        return tags


class BacklogQuota(_Model):
    limit_size_mb: int = Field(ge=1)
    limit_time_seconds: int | None = Field(default=None, ge=1)
    policy: Literal["producer_request_hold", "producer_exception", "consumer_backlog_eviction"]


class PulsarTier(_Model):
    retention_minutes: int = Field(ge=-1)
    retention_size_mb: int = Field(ge=-1)
    backlog_quota: BacklogQuota
    message_ttl_seconds: int = Field(ge=0)

    @model_validator(mode="after")
    def _backlog_below_retention(self) -> PulsarTier:
        # Pulsar refuses a backlog quota that reaches the retention limits (and the reverse).
        if self.retention_size_mb != -1 and self.backlog_quota.limit_size_mb >= self.retention_size_mb:
            raise ValueError("backlog_quota.limit_size_mb must be below retention_size_mb")
        limit_time = self.backlog_quota.limit_time_seconds
        if limit_time is not None and self.retention_minutes != -1 and limit_time >= self.retention_minutes * 60:
            raise ValueError("backlog_quota.limit_time_seconds must be below retention_minutes")
        return self


class IgniteTier(_Model):
    cache_mode: Literal["PARTITIONED", "REPLICATED"]
    backups: int = Field(ge=0)
    atomicity: Literal["ATOMIC", "TRANSACTIONAL"]


class ElasticsearchTier(_Model):
    shards: int = Field(ge=1, le=1024)
    replicas: int = Field(ge=0)
    refresh_interval: str = Field(pattern=r"^(-1|[0-9]+(ms|s|m))$")
    mappings: dict[str, Any]

    @field_validator("mappings")
    @classmethod
    def _mappings(cls, mappings: dict[str, Any]) -> dict[str, Any]:
        properties = mappings.get("properties")
        if not isinstance(properties, dict) or not all(
            isinstance(spec, dict) and isinstance(spec.get("type"), str) for spec in properties.values()
        ):
            raise ValueError("mappings.properties must map field names to {type: ...}")
        return mappings


class LimitRangeTier(_Model):
    default_cpu: str
    default_memory: str
    default_request_cpu: str
    default_request_memory: str
    max_cpu: str
    max_memory: str

    @field_validator("*")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if _K8S_QUANTITY.fullmatch(value) is None:
            raise ValueError(f"not a Kubernetes quantity: {value!r}")
        return value


class NetworkPolicyTier(_Model):
    default_deny: bool = True
    allow_same_namespace: bool = True
    allow_dns: bool = True


class KubernetesTier(_Model):
    pods: int = Field(ge=1)
    limit_range: LimitRangeTier
    network_policy: NetworkPolicyTier
    admin_cluster_role: str = Field(pattern=r"^[a-z0-9]([-a-z0-9:.]*[a-z0-9])?$")


class TierConfig(_Model):
    """Everything one tier gives a tenant."""

    name: str
    quota: Quota
    cassandra: CassandraTier
    s3: S3Tier
    pulsar: PulsarTier
    ignite: IgniteTier
    elasticsearch: ElasticsearchTier
    kubernetes: KubernetesTier


class TiersConfig(_Model):
    source: str
    tiers: dict[str, TierConfig]

    def tier(self, name: str) -> TierConfig:
        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(
                f"unknown tier {name!r}; the tiers file {self.source} defines {', '.join(self.tiers)}"
            ) from None

    @property
    def names(self) -> list[str]:
        return list(self.tiers)


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _deep_merge(base[key], value) if key in base else value
        return merged
    return override


def parse_tiers(document: Any, source: str = "<memory>") -> TiersConfig:
    """Build and validate the tiers from a parsed YAML document; raise :class:`PermanentError` if invalid."""
    if not isinstance(document, dict) or not isinstance(document.get("tiers"), dict) or not document["tiers"]:
        raise PermanentError(f"tiers file {source}: expected a mapping with a non-empty 'tiers' mapping")
    unknown = set(document) - {"defaults", "tiers"}
    if unknown:
        raise PermanentError(f"tiers file {source}: unknown top-level keys {sorted(unknown)}")
    defaults = document.get("defaults") or {}
    tiers: dict[str, TierConfig] = {}
    for name, body in document["tiers"].items():
        if not isinstance(name, str) or re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name) is None:
            raise PermanentError(f"tiers file {source}: bad tier name {name!r}")
        try:
            tiers[name] = TierConfig.model_validate({"name": name, **_deep_merge(defaults, body or {})})
        except ValidationError as exc:
            raise PermanentError(f"tiers file {source}: tier {name!r} is invalid: {exc}") from exc
    return TiersConfig(source=source, tiers=tiers)


def load_tiers(path: Path | None = None) -> TiersConfig:
    """Read the tiers file (``path``, else the packaged ``tiers.yaml``); cached per path and mtime."""
    resolved = (path or DEFAULT_TIERS_FILE).resolve()
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError as exc:
        raise PermanentError(f"tiers file {resolved} cannot be read: {exc}") from exc
    return _load_cached(resolved, mtime)


@lru_cache(maxsize=8)
def _load_cached(path: Path, mtime_ns: int) -> TiersConfig:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PermanentError(f"tiers file {path} cannot be read: {exc}") from exc
    return parse_tiers(document, str(path))
