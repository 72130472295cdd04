"""Building the provisioners, dry-run plans, and refusing unsafe tenants before any backend is contacted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.provisioners.base import RESOURCES, Provisioner, TenantSpec
from pipeline.provisioners.errors import PermanentError, TransientError, UnknownTierError, UnsafeNameError
from pipeline.provisioners.registry import aclose_all, build_provisioners, plan_all, teardown_order
from pipeline.provisioners.tiers import TiersConfig


def _unreachable_settings(tmp_path: Path) -> Settings:
    """Settings whose every backend points at a closed port on 127.0.0.1."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    return Settings(
        cassandra_hosts="127.0.0.1", cassandra_port=1, minio_endpoint="127.0.0.1:1",
        pulsar_admin_url="http://127.0.0.1:1", ignite_host="127.0.0.1", ignite_port=1,
        elasticsearch_host="http://127.0.0.1:1", openproject_url="http://127.0.0.1:1", kubeconfig=kubeconfig,
    )


def _tenant(**fields: object) -> TenantSpec:
    values: dict[str, object] = {"tenant_id": "acme-prod", "name": "Acme", "tier": "standard",
                                 "owner_user_id": "alice@example.com"}
    return TenantSpec.model_validate({**values, **fields})


def test_build_provisioners_in_fixed_order(tmp_path: Path) -> None:
    provisioners = build_provisioners(_unreachable_settings(tmp_path))
    assert list(provisioners) == list(RESOURCES)
    assert [p.resource for p in teardown_order(provisioners)] == list(reversed(RESOURCES))
    assert all(isinstance(p, Provisioner) for p in provisioners.values())
    assert {r for r, p in provisioners.items() if p.data_bearing} == {"cassandra", "s3", "elasticsearch"}
    assert list(build_provisioners(_unreachable_settings(tmp_path), only=["kubernetes", "s3"])) == ["s3", "kubernetes"]
    with pytest.raises(PermanentError):
        build_provisioners(_unreachable_settings(tmp_path), only=["mongodb"])


@pytest.mark.parametrize("tier", ["free", "standard", "enterprise"])
def test_dry_run_plans_every_backend_with_the_tier(tmp_path: Path, tier: str, tiers: TiersConfig) -> None:
    plans = plan_all(build_provisioners(_unreachable_settings(tmp_path)), _tenant(tier=tier))
    assert list(plans) == list(RESOURCES)
    json.dumps({r: p.model_dump() for r, p in plans.items()})  # JSON-serialisable
    config = tiers.tier(tier)
    assert plans["cassandra"].settings["replication"] == config.cassandra.replication()
    assert plans["s3"].settings["versioning"] is config.s3.versioning
    assert plans["s3"].settings["lifecycle"] == config.s3.lifecycle.model_dump()
    assert plans["pulsar"].settings["message_ttl_seconds"] == config.pulsar.message_ttl_seconds
    assert plans["ignite"].settings["cache_mode"] == config.ignite.cache_mode
    assert plans["elasticsearch"].settings["shards"] == config.elasticsearch.shards
    hard = plans["kubernetes"].settings["manifests"][1]["spec"]["hard"]
    assert hard["requests.nvidia.com/gpu"] == str(config.quota.gpus)
    assert all(p.tier == tier and p.tenant_id == "acme-prod" for p in plans.values())


def test_plans_are_pure(tmp_path: Path) -> None:
    provisioners = build_provisioners(_unreachable_settings(tmp_path))
    assert plan_all(provisioners, _tenant()) == plan_all(provisioners, _tenant())


HOSTILE = ["acme'; DROP KEYSPACE x; --", "../../etc", "Acme", "ácme", "a" * 300, "acme/default", 'x"y']


@pytest.mark.parametrize("tenant_id", HOSTILE)
async def test_unsafe_tenants_are_refused_before_any_backend_is_contacted(tmp_path: Path, tenant_id: str) -> None:
    # Every backend is unreachable: reaching one would raise TransientError, not UnsafeNameError.
    provisioners = build_provisioners(_unreachable_settings(tmp_path))
    tenant = _tenant(tenant_id=tenant_id)
    try:
        for provisioner in provisioners.values():
            with pytest.raises(UnsafeNameError):
                provisioner.plan(tenant)
            with pytest.raises(UnsafeNameError):
                await provisioner.apply(tenant)
            with pytest.raises(UnsafeNameError):
                await provisioner.verify(tenant)
            with pytest.raises(UnsafeNameError):
                await provisioner.delete(tenant, purge=True)
    finally:
        await aclose_all(provisioners)


async def test_unknown_tier_is_refused(tmp_path: Path) -> None:
    provisioners = build_provisioners(_unreachable_settings(tmp_path))
    with pytest.raises(UnknownTierError):
        await provisioners["s3"].apply(_tenant(tier="platinum"))


@pytest.mark.parametrize("resource", RESOURCES)
async def test_unreachable_backend_is_a_transient_error(tmp_path: Path, resource: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    provisioners = build_provisioners(_unreachable_settings(tmp_path), only=[resource])
    try:
        with pytest.raises(TransientError) as caught:
            await provisioners[resource].apply(_tenant())
        assert caught.value.retryable
        assert caught.value.resource == resource
        with pytest.raises(TransientError):
            await provisioners[resource].verify(_tenant())
    finally:
        await aclose_all(provisioners)


def test_make_tenant_gives_unique_valid_ids(make_tenant: Callable[..., TenantSpec]) -> None:
    first, second = make_tenant(), make_tenant("free")
    assert first.tenant_id != second.tenant_id
    first.names()
    second.names()


def test_backend_credentials_reach_the_provisioners(tmp_path: Path) -> None:
    from cassandra.auth import PlainTextAuthProvider

    settings = _unreachable_settings(tmp_path).model_copy(update={
        "cassandra_username": "svc-cql", "cassandra_password": SecretStr("cql-pass"),
        "elasticsearch_username": "svc-es", "elasticsearch_password": SecretStr("es-pass"),
    })
    built = build_provisioners(settings, only=["cassandra", "elasticsearch"])
    auth = built["cassandra"]._auth  # type: ignore[attr-defined]
    assert isinstance(auth, PlainTextAuthProvider) and (auth.username, auth.password) == ("svc-cql", "cql-pass")
    assert built["cassandra"]._ssl_context is None  # type: ignore[attr-defined]  # loopback, no CA file: plain CQL
    search = built["elasticsearch"]
    assert (search._username, search._password) == ("svc-es", "es-pass")  # type: ignore[attr-defined]
    without = build_provisioners(_unreachable_settings(tmp_path), only=["cassandra"])
    assert without["cassandra"]._auth is None  # type: ignore[attr-defined]
