"""At-least-once under SIGKILL: tenant-created events published through Pulsar while the worker is killed and
restarted, on a fresh consumer group working through a backlog. Nothing may be lost or applied twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.harness.crash import run_crash_loop, worker_log_tails
from devstack.harness.tenant_provisioning import EventPlane
from devstack.harness.worker import WorkerProcess

pytestmark = pytest.mark.integration


def test_no_tenant_event_is_lost_or_doubled_across_kills(
    event_plane: EventPlane,
    stream_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    admin_token: str,
    tmp_path: Path,
) -> None:
    report = run_crash_loop(
        event_plane, start_worker,
        {**stream_env, "BRIDGE_SUBSCRIPTION": f"crash-{stream_env['APP_ID']}",
         "KAFKA_GROUP_INSTANCE_ID": f"crash-{stream_env['APP_ID']}"},
        admin_token, backlog=300, events=100, rate=10, kills=4, converge_timeout=240,
    )
    summary = report.summary()
    print("crash loop:", summary)  # noqa: T201 - the figures of the short run, kept in the test log
    assert report.kills == 4, summary
    assert not report.lost, f"{summary}\nlost: {report.lost_detail}\n{worker_log_tails(tmp_path)}"
    assert not report.duplicated_commands, f"{summary}\n{report.duplicated_commands[:20]}"
    assert not report.missing_records, f"{summary}\nmissing: {report.missing_records[:20]}"
