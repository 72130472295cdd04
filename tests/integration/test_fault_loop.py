"""The crash and fault loop, short version (issue #11): mixed events through Pulsar, the executor on against
the real backends, SIGKILLs during the backlog and during allocations, the derivatives stand-in stopped for a
while, a second worker killed. Afterwards: no lost event, no duplicated side effect, no leaked allocation,
every tenant converged, every compute request final. The long version is ``bench/crash_loop.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.base import StackContext
from devstack.harness.fault_loop import CrashAndFaultLoop, LoopPlan, backend_clients, loop_env, worker_logs
from devstack.harness.tenant_provisioning import Backends, EventPlane
from devstack.harness.worker import WorkerProcess
from tests.integration.conftest import JWT_SECRET

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backends_env(
    cassandra_service: dict[str, str], s3_service: dict[str, str], pulsar_service: dict[str, str],
    openproject_service: dict[str, str], ignite_service: dict[str, str], elasticsearch_service: dict[str, str],
    kubernetes_service: dict[str, str], derivatives_service: dict[str, str],
) -> dict[str, str]:
    return {**cassandra_service, **s3_service, **pulsar_service, **openproject_service, **ignite_service,
            **elasticsearch_service, **kubernetes_service, **derivatives_service}


@pytest.fixture(scope="module")
def backends(backends_env: dict[str, str]) -> Iterator[Backends]:
    with backend_clients(backends_env) as clients:
        yield clients


def test_nothing_is_lost_doubled_or_leaked_across_kills_outages_and_a_second_worker(
    event_plane: EventPlane,
    backends_env: dict[str, str],
    backends: Backends,
    stack_ctx: StackContext,
    start_worker: Callable[..., WorkerProcess],
    admin_token: str,
    tmp_path: Path,
) -> None:
    env = loop_env(backends_env, {}, event_plane, JWT_SECRET)
    plan = LoopPlan(backlog=4, tenants=8, deletes=2, users=4, metrics=10, compute=4, kills=4, rate=2.0,
                    kill_delay=(5.0, 12.0), outages=("derivatives",), outage_seconds=10.0, two_workers=True,
                    converge_timeout=600.0)
    loop = CrashAndFaultLoop(plan, event_plane, env, backends, stack_ctx, start_worker, admin_token, print)
    report = loop.run()
    summary = report.summary()
    print("fault loop:", summary)  # noqa: T201 - the figures of the short run, kept in the test log
    context = f"{summary}\n{report.details()}\n{worker_logs(tmp_path)}"
    assert report.kills == plan.kills + 1, context  # the random kills, and the second worker's
    assert report.kills_during_backlog >= 1 and report.second_worker_killed, context
    assert report.outages == ["derivatives"], context
    assert not report.lost, context
    assert not report.duplicated, context
    assert not report.leaked, context
    assert not report.not_converged, context
    assert not report.backend_mismatches, context
    assert report.converge_seconds is not None, context
    assert sum(report.compute_states.values()) == plan.compute, context
    assert not report.cleanup_errors, context
