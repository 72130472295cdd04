"""Loading and validating the tier configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Settings
from pipeline.provisioners.errors import PermanentError, UnknownTierError
from pipeline.provisioners.tiers import DEFAULT_TIERS_FILE, Quota, QuotaOverride, load_tiers, parse_tiers


def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DEFAULT_TIERS_FILE.read_text())
    return document


def test_packaged_tiers_load_with_distinct_settings() -> None:
    tiers = load_tiers()
    assert tiers.names == ["free", "standard", "enterprise"]
    free, standard, enterprise = (tiers.tier(n) for n in tiers.names)
    assert free.cassandra.replication() == {"class": "SimpleStrategy", "replication_factor": "1"}
    assert enterprise.cassandra.replication() == {"class": "NetworkTopologyStrategy", "datacenter1": "1"}
    assert (free.s3.versioning, standard.s3.versioning, enterprise.s3.versioning) == (False, True, True)
    assert free.s3.lifecycle.expiration_days == 30
    assert standard.s3.lifecycle.noncurrent_version_expiration_days == 30
    assert all(t.s3.lifecycle.abort_incomplete_multipart_upload_days for t in (free, standard, enterprise))
    assert free.pulsar.retention_minutes < standard.pulsar.retention_minutes < enterprise.pulsar.retention_minutes
    assert enterprise.ignite.cache_mode == "REPLICATED" and enterprise.ignite.atomicity == "TRANSACTIONAL"
    assert {t.elasticsearch.replicas for t in (free, standard, enterprise)} == {0}
    assert enterprise.quota == Quota(cpu_cores=32, memory_gib=128, gpus=4, storage_gib=1000)
    assert free.quota.gpus == 0
    # Defaults are merged under each tier: the tier's tag plus the default tag.
    assert free.s3.tags == {"managed-by": "provisioning-service", "tier": "free"}
    assert enterprise.kubernetes.limit_range.max_cpu == "8"
    assert enterprise.kubernetes.limit_range.default_cpu == "500m"


def test_unknown_tier_is_a_permanent_error() -> None:
    with pytest.raises(UnknownTierError, match="platinum"):
        load_tiers().tier("platinum")


def test_tiers_file_setting_overrides_the_packaged_file(tmp_path: Path) -> None:
    document = _document()
    document["tiers"]["free"]["quota"]["cpu_cores"] = 1.5
    document["tiers"] = {"free": document["tiers"]["free"]}
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(document))
    settings = Settings(tiers_file=path)
    tiers = load_tiers(settings.tiers_file)
    assert tiers.names == ["free"]
    assert tiers.tier("free").quota.cpu_cores == 1.5
    # Edited files are re-read (cached per modification time).
    document["tiers"]["free"]["quota"]["cpu_cores"] = 3
    path.write_text(yaml.safe_dump(document) + "\n# edited\n")
    assert load_tiers(path).tier("free").quota.cpu_cores == 3


def _broken(edit: str) -> dict[str, Any]:
    document = _document()
    tier = document["tiers"]["free"]
    if edit == "typo":
        tier["s3"]["versionning"] = True
    elif edit == "nts-without-datacenters":
        tier["cassandra"] = {"strategy": "NetworkTopologyStrategy", "durable_writes": True}
    elif edit == "simple-with-datacenters":
        tier["cassandra"]["datacenters"] = {"dc1": 1}
    elif edit == "backlog-above-retention":
        tier["pulsar"]["backlog_quota"]["limit_size_mb"] = 4096
    elif edit == "bad-quantity":
        tier["kubernetes"] = {"limit_range": {"max_cpu": "lots"}}
    elif edit == "negative-quota":
        tier["quota"]["gpus"] = -1
    elif edit == "bad-cache-mode":
        tier["ignite"] = {"cache_mode": "LOCAL"}
    elif edit == "mapping-without-types":
        tier["elasticsearch"] = {"mappings": {"properties": {"title": "text"}}}
    elif edit == "top-level-typo":
        document["teirs"] = {}
    elif edit == "bad-tag":
        tier["s3"]["tags"] = {"owner": "a\nb"}
    return document


@pytest.mark.parametrize(
    "edit",
    [
        "typo",
        "nts-without-datacenters",
        "simple-with-datacenters",
        "backlog-above-retention",
        "bad-quantity",
        "negative-quota",
        "bad-cache-mode",
        "mapping-without-types",
        "top-level-typo",
        "bad-tag",
    ],
)
def test_invalid_tier_files_are_refused(edit: str) -> None:
    with pytest.raises(PermanentError):
        parse_tiers(_broken(edit), "test")


@pytest.mark.parametrize("document", [None, [], {"tiers": {}}, {"tiers": {"Bad Name": {}}}])
def test_malformed_documents_are_refused(document: Any) -> None:
    with pytest.raises(PermanentError):
        parse_tiers(document, "test")


def test_missing_file_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="cannot be read"):
        load_tiers(tmp_path / "nope.yaml")


def test_quota_override_replaces_only_given_numbers() -> None:
    base = load_tiers().tier("standard").quota
    merged = QuotaOverride(gpus=2, memory_gib=64).apply_to(base)
    assert merged == Quota(cpu_cores=base.cpu_cores, memory_gib=64, gpus=2, storage_gib=base.storage_gib)
