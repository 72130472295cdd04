"""KUBERNETES_ENABLED=false (compose.yaml's default): the worker runs without a cluster. Its one message, and the
kubernetes provisioner's commands reported ``skipped`` with that reason (not failed, not retried). The tenants'
state (tests/pipeline/tenants/test_logic.py), compute offers (tests/pipeline/compute/test_runtime.py) and
advisory scaling (tests/pipeline/scaling/test_requests.py) have their tests beside the others of their module.
With Kubernetes enabled (the default setting) everything stays as it was."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from pipeline.config import KUBERNETES_DISABLED_REASON, Settings
from pipeline.contract.records import ProvisioningResult
from pipeline.events.models import CommandAction, ProvisioningCommand
from pipeline.executor import RetryPolicy, execute
from pipeline.provisioners.base import RESOURCES, TenantSpec
from pipeline.provisioners.disabled import DisabledProvisioner
from pipeline.provisioners.errors import PermanentError
from pipeline.provisioners.kubernetes import KubernetesProvisioner
from pipeline.provisioners.registry import build_provisioners, plan_all
from pipeline.worker import build_worker
from tests.web.conftest import PEER_SECRET, SECRET


def off(**fields: object) -> Settings:
    return Settings(kubernetes_enabled=False, **fields)  # type: ignore[arg-type]


def tenant() -> TenantSpec:
    return TenantSpec(tenant_id="acme-prod", name="Acme", tier="standard", owner_user_id="alice@example.com")


def command(action: CommandAction, resource: str = "kubernetes", **spec: object) -> ProvisioningCommand:
    return ProvisioningCommand(
        command_id=f"c-{action.value}", tenant_id="acme-prod", resource=resource, action=action,
        issued_at=datetime.now(UTC), cause_event_id="e1",
        spec={"name": "Acme", "tier": "standard", "owner_user_id": "alice@example.com",
              "quota": {"cpu_cores": 8, "memory_gib": 32, "gpus": 0, "storage_gib": 100}, **spec},
    )


# -- settings -----------------------------------------------------------------------------------------------


def test_kubernetes_is_enabled_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().kubernetes_enabled and Settings().kubernetes_disabled_reason is None
    monkeypatch.setenv("KUBERNETES_ENABLED", "false")
    reason = Settings().kubernetes_disabled_reason
    assert reason == KUBERNETES_DISABLED_REASON
    assert reason.startswith("Kubernetes disabled") and "KUBECONFIG" in reason and "compose.kubernetes.yaml" in reason


def test_the_worker_says_once_that_kubernetes_is_disabled(caplog: pytest.LogCaptureFixture) -> None:
    secrets = {"jwt_secret": SecretStr(SECRET), "peer_secret": SecretStr(PEER_SECRET)}
    with caplog.at_level(logging.INFO, logger="pipeline.worker"):
        build_worker(Settings(**secrets))  # type: ignore[arg-type]
        assert not [r for r in caplog.records if "Kubernetes disabled" in r.getMessage()]
        build_worker(off(**secrets))
    said = [r for r in caplog.records if "Kubernetes disabled" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert said[0].getMessage() == KUBERNETES_DISABLED_REASON


# -- provisioners -------------------------------------------------------------------------------------------


def test_the_registry_switches_only_the_kubernetes_provisioner_off() -> None:
    on, disabled = build_provisioners(Settings()), build_provisioners(off())
    assert list(disabled) == list(on) == list(RESOURCES)
    assert isinstance(on["kubernetes"], KubernetesProvisioner)
    kubernetes = disabled["kubernetes"]
    assert isinstance(kubernetes, DisabledProvisioner) and kubernetes.reason == KUBERNETES_DISABLED_REASON
    assert (kubernetes.resource, kubernetes.data_bearing) == ("kubernetes", False)
    assert all(type(disabled[r]) is type(on[r]) for r in RESOURCES if r != "kubernetes")
    # A dry run still shows what the cluster would hold.
    assert plan_all(disabled, tenant()) == plan_all(on, tenant())


async def test_a_disabled_provisioner_called_anyway_refuses_with_the_reason_and_no_retry() -> None:
    kubernetes = build_provisioners(off(), only=["kubernetes"])["kubernetes"]
    with pytest.raises(PermanentError, match="Kubernetes disabled") as refused:
        await kubernetes.apply(tenant())
    assert not refused.value.retryable
    with pytest.raises(PermanentError, match="KUBERNETES_ENABLED=false"):
        await kubernetes.delete(tenant(), purge=True)
    await kubernetes.aclose()


@pytest.mark.parametrize("action", [CommandAction.CREATE, CommandAction.DELETE, CommandAction.UPDATE_QUOTA,
                                    CommandAction.CREATE_USER, CommandAction.DELETE_USER])
async def test_the_executor_reports_a_disabled_backends_commands_skipped_with_the_reason(
    action: CommandAction,
) -> None:
    reports: list[ProvisioningResult] = []

    async def report(result: ProvisioningResult) -> None:
        reports.append(result)

    async def no_sleep(_: float) -> None:
        raise AssertionError("a skipped command is not retried")

    user = {"user_id": "bob", "email": "bob@example.com", "roles": ["member"]}
    final = await execute(command(action, user=user), build_provisioners(off()), report,
                          RetryPolicy(max_attempts=3), sleep=no_sleep, verify_first=True)
    assert [r.status for r in reports] == ["skipped"] and final is reports[0]
    assert (final.attempts, final.error, final.detail) == (0, None, {"reason": KUBERNETES_DISABLED_REASON})


async def test_the_executor_still_fails_a_refused_tenant_of_a_disabled_backend() -> None:
    """Validation comes first: an unsafe owner is refused (failed) whatever the backend's switch says."""
    reports: list[ProvisioningResult] = []

    async def report(result: ProvisioningResult) -> None:
        reports.append(result)

    final = await execute(command(CommandAction.CREATE, owner_user_id="x" * 2000), build_provisioners(off()), report)
    assert final.status == "failed" and final.error is not None and final.error.startswith("refused")
