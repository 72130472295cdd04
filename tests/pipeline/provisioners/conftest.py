"""Helpers of the provisioner tests: settings from a service's exports, unique tenants, the packaged tiers."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from pipeline.config import Settings
from pipeline.provisioners.base import TenantSpec
from pipeline.provisioners.tiers import TiersConfig, load_tiers

#: Runs of the test-suite never share tenant ids (the servers may be reused across runs).
RUN = secrets.token_hex(3)


def settings_from(exports: dict[str, str]) -> Settings:
    """Settings pointing at the servers a session fixture started (its env exports)."""
    return Settings(**{key.lower(): value for key, value in exports.items()})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiers() -> TiersConfig:
    return load_tiers()


@pytest.fixture
def make_tenant(request: pytest.FixtureRequest) -> Callable[..., TenantSpec]:
    """``make_tenant(tier="standard", **fields)``: a tenant whose id is unique to this run and test."""
    counter = iter(range(1000))

    def make(tier: str = "standard", **fields: object) -> TenantSpec:
        base = request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")[:18].strip("-")
        tenant_id = f"{base}-{RUN}-{next(counter)}"
        values: dict[str, object] = {
            "tenant_id": tenant_id,
            "name": f"Test tenant {tenant_id}",
            "tier": tier,
            "owner_user_id": f"{tenant_id}-owner@example.com",
            **fields,
        }
        return TenantSpec.model_validate(values)

    return make
