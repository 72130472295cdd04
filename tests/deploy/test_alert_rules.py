"""deploy/prometheus/alerts.yml: valid for Prometheus (promtool check), each alert fires on the series meant to
raise it and stays quiet otherwise (promtool's unit tests in alerts_test.yml), every alert is covered by a
firing case, and every metric it reads is one the worker exports. promtool comes from the same Debian package
as the local stack's Prometheus (installed into the devstack cache if missing)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.base import StackContext
from devstack.errors import DevstackError
from devstack.prometheus import ALERT_RULES, Prometheus
from tests.deploy.promql import PROMETHEUS_SERIES, exported_names, metric_names

RULE_TESTS = ALERT_RULES.with_name("alerts_test.yml")


@pytest.fixture(scope="module")
def promtool(stack_ctx: StackContext) -> Path:
    service = Prometheus()
    try:
        service.install(stack_ctx)
    except DevstackError as exc:
        pytest.fail(f"cannot install promtool: {exc}", pytrace=False)
    return service.promtool(stack_ctx)


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=ALERT_RULES.parent)


def test_promtool_accepts_the_rule_file(promtool: Path) -> None:
    checked = run([str(promtool), "check", "rules", str(ALERT_RULES)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_each_alert_fires_when_it_should_and_only_then(promtool: Path) -> None:
    tested = run([str(promtool), "test", "rules", str(RULE_TESTS)])
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_case_where_it_fires() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    assert {rule["alert"] for rule in rules()} == firing


def test_every_metric_an_alert_reads_is_exported_by_the_worker() -> None:
    exported = exported_names() | PROMETHEUS_SERIES
    for rule in rules():
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']} reads metrics the worker does not export: {sorted(unknown)}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
