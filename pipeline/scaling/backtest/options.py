"""What a backtest runs: its options and the policies of a policy file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.scaling.backtest.errors import BacktestError
from pipeline.scaling.policies import (
    Policy,
    parse_policies,
)

TENANT = "backtest"
WORKLOAD = "series"


@dataclass
class BacktestOptions:
    csv: Path
    time_column: str
    value_column: str
    interval_minutes: float
    capacity_per_replica: float | None = None
    boot_steps: int = 2
    policy_file: Path | None = None
    horizon: int = 5
    score_from: int | None = None
    reactive_target: float = 0.7
    predictive_target: float = 1.0
    predictive_quantile: float = 0.9
    predictive_scale_in_stabilization_seconds: int = 0
    hybrid_reactive_target: float | None = 0.8
    """Also run predictive + reactive (maximum, as AWS recommends) with this reactive target."""
    forecaster: dict[str, Any] = field(default_factory=dict)
    """Extra :class:`ForecasterConfig` fields."""
    equal_cost: bool = True


def load_policy_file(path: Path) -> list[Policy]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BacktestError(f"{path}: cannot read policy file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise BacktestError(f"{path}: not JSON or YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("policies", [data]) if "policies" in data else [data]
    if not isinstance(data, list):
        raise BacktestError(f"{path}: expected a policy document or a list of them")
    docs = []
    for doc in data:
        if not isinstance(doc, dict):
            raise BacktestError(f"{path}: every policy must be a mapping")
        docs.append({"policy_id": "policy", "tenant_id": TENANT, "workload": WORKLOAD, **doc})
        docs[-1].update({"tenant_id": TENANT, "workload": WORKLOAD})
    try:
        return parse_policies(docs)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BacktestError(f"{path}: invalid policy: {where}: {first.get('msg')}") from None


