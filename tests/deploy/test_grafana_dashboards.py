"""deploy/grafana: every dashboard is well formed for Grafana's file provisioning (unique uid and panel ids,
panels on the 24-column grid without overlap, a Prometheus datasource variable), and every query reads metrics
the worker exports. No Grafana runs here: the structure is checked against what Grafana's dashboard model
requires, and the queries against the worker's registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import PROMETHEUS_SERIES, exported_names, metric_names

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_there_is_a_dashboard_and_uids_are_unique() -> None:
    assert DASHBOARDS
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_the_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_reads_metrics_the_worker_exports(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    exported = exported_names() | PROMETHEUS_SERIES
    queries = [(panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel.get("targets", [])]
    queries += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    for title, expr in queries:
        used = metric_names(expr)
        assert used, f"{title}: no metric in {expr!r}"
        assert not used - exported, f"{title} reads metrics the worker does not export: {sorted(used - exported)}"


def test_compose_provisions_the_dashboards_and_the_rules() -> None:
    compose = yaml.safe_load((GRAFANA.parents[1] / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "provisioning.yml").read_text())
    mounted = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"])
    assert mounted["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounted["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    prometheus = compose["services"]["prometheus"]
    config = yaml.safe_load((GRAFANA.parent / "prometheus" / "prometheus.yml").read_text())
    rule_mounts = [v for v in prometheus["volumes"] if v.startswith("./deploy/prometheus/alerts.yml:")]
    assert [m.split(":")[1] for m in rule_mounts] == config["rule_files"]
