"""Scale-out on one machine (issue 15): three workers bound to the wildcard address and advertising distinct
URLs, tenant-created events flowing through Pulsar, one worker killed and restarted. Every tenant published
is served from every worker at the end, with the same record, and none is lost. The figures (take-over time,
failed reads meanwhile) are measured by ``bench/scale_out.py``; here they are only reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.harness.scale_out import run_scale_out
from devstack.harness.tenant_provisioning import EventPlane
from tests.integration.conftest import JWT_SECRET

pytestmark = pytest.mark.integration


def test_three_workers_lose_nothing_when_one_is_killed_and_each_serves_every_tenant(
    event_plane: EventPlane, admin_token: str, tmp_path: Path
) -> None:
    report = run_scale_out(event_plane, tmp_path, JWT_SECRET, admin_token, tenants=60, rate=15.0)
    assert report.tenants_published == 60
    assert report.seconds_to_serve_after_kill is not None, "the survivors never served the killed worker's tenants"
    assert report.seconds_to_restart_serving is not None, "the restarted worker never served every tenant"
    assert report.tenants_missing == []
    assert report.inconsistent == []
