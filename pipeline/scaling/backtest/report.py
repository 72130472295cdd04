"""The backtest's result for people: a few lines and one table (``--json`` prints the whole document)."""

from __future__ import annotations

from typing import Any

from pipeline.client_commands import table


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def _policy_rows(policies: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "policy": name,
            "under": _percent(run["under_provisioned_fraction"]),
            "unserved": _percent(run["unserved_fraction"]),
            "hours": f"{run['replica_hours']:.1f}",
            "vs_oracle": f"{run['replica_hours_vs_oracle']:.3f}",
        }
        for name, run in policies.items()
    ]


def _equal_cost_line(comparison: dict[str, Any]) -> str:
    policy = comparison["policy"]
    under = comparison["under_provisioned_fraction"]
    hours = comparison["replica_hours"]
    matched = "" if comparison["matched_within_2_percent"] else " (costs not matched within 2 %)"
    return (
        f"at equal cost ({hours[policy]:.1f} replica-hours): {policy} under-provisioned {_percent(under[policy])} "
        f"of steps, reactive tuned to target {comparison['reactive_target_utilization']:.3f}: "
        f"{_percent(under['reactive'])}{matched}"
    )


def summary(result: dict[str, Any]) -> str:
    """Series, forecast quality, each policy's provisioning and the equal-cost comparisons."""
    series, settings, forecast = result["series"], result["settings"], result["forecast"]
    baselines = forecast["baselines_wmape"]
    lines = [
        f"series    {series['csv']}: {series['steps']} steps of {series['interval_minutes']:g} min, "
        f"{series['start']} to {series['end']}, scored from step {settings['score_from']}",
        f"forecast  {forecast['horizon']} steps ahead: wMAPE {forecast['wmape']:.4f} (last value "
        f"{baselines['last_value']:.4f}, same slot last week {baselines['same_slot_last_week']:.4f}), "
        f"NRMSE {forecast['nrmse']:.3f}, q0.1-q0.9 band covers {_percent(forecast['band_q0.1_q0.9_coverage'])}",
        "",
        table(
            _policy_rows(result["policies"]),
            [("policy", "policy"), ("under-provisioned", "under"), ("unserved", "unserved"),
             ("replica-hours", "hours"), ("vs oracle", "vs_oracle")],
        ),
    ]
    comparisons = [result[key] for key in ("equal_cost", "equal_cost_predictive_plus_reactive") if key in result]
    if comparisons:
        lines.append("")
        lines.extend(_equal_cost_line(comparison) for comparison in comparisons)
    return "\n".join(lines)
