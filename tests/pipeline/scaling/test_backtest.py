from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.scaling.backtest import BacktestError, load_series, main

START = datetime(2026, 1, 5, tzinfo=UTC)


def hourly(n: int) -> list[float]:
    """Daily cycle with quieter weekends and a deterministic wobble."""
    out = []
    for t in range(n):
        weekend = (t // 24) % 7 in (5, 6)
        out.append(
            100.0 + 60.0 * math.sin(2 * math.pi * (t % 24) / 24) - (30.0 if weekend else 0.0) + 5.0 * math.sin(t * 1.7)
        )
    return out


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    lines = [",".join(header or ["timestamp", "value"])] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def nab_like(path: Path, n: int = 24 * 7 * 3, minutes: int = 60) -> Path:
    rows = [
        [(START + timedelta(minutes=minutes * i)).strftime("%Y-%m-%d %H:%M:%S"), f"{v:.3f}"]
        for i, v in enumerate(hourly(n))
    ]
    return write_csv(path, rows)


def run(argv: list[str], capsys: pytest.CaptureFixture[str], as_json: bool = True) -> tuple[int, str, str]:
    code = main([*argv, "--json"] if as_json else argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_backtest_on_a_seasonal_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = nab_like(tmp_path / "series.csv")
    code, out, err = run(
        [
            "--csv",
            str(csv_path),
            "--time-column",
            "timestamp",
            "--value-column",
            "value",
            "--interval-minutes",
            "60",
            "--horizon",
            "3",
            "--boot-steps",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["series"]["steps"] == 504
    assert result["settings"]["score_from"] == 168
    fc = result["forecast"]
    assert fc["horizon"] == 3
    assert fc["scored_points"] == 504 - 168 - 3
    assert fc["wmape"] < fc["baselines_wmape"]["last_value"]
    assert {"us_per_sample_wall", "us_per_sample_cpu"} <= set(fc)
    policies = result["policies"]
    assert set(policies) == {"reactive", "predictive", "predictive_plus_reactive", "oracle"}
    assert policies["oracle"]["under_provisioned_fraction"] == 0.0
    for run_ in policies.values():
        assert 0.0 <= run_["under_provisioned_fraction"] <= 1.0
        assert run_["replica_hours"] >= policies["oracle"]["replica_hours"] * 0.5
    eq = result["equal_cost"]
    assert eq["matched_within_2_percent"]
    hours = eq["replica_hours"]
    assert abs(hours["reactive"] - hours["predictive"]) <= 0.02 * hours["predictive"]
    assert eq["under_provisioned_fraction"]["predictive"] < eq["under_provisioned_fraction"]["reactive"]


def test_three_header_rows_like_the_taxi_file_are_skipped(tmp_path: Path) -> None:
    rows = [["datetime", "int", "int", "int"], ["T", "", "", ""]]
    rows += [
        [(START + timedelta(minutes=30 * i)).strftime("%Y-%m-%d %H:%M:%S"), str(1000 + i), "0", "1"] for i in range(100)
    ]
    path = write_csv(tmp_path / "taxi.csv", rows, ["timestamp", "passenger_count", "timeofday", "dayofweek"])
    series = load_series(path, "timestamp", "passenger_count", 30)
    assert series.skipped_header_rows == 2
    assert len(series.values) == 100
    assert series.values[0] == 1000.0


def test_gaps_and_duplicates_are_put_on_the_grid(tmp_path: Path) -> None:
    stamps = [START + timedelta(minutes=5 * i) for i in range(60) if i not in (10, 11)]
    rows = [[s.isoformat(), "1.5"] for s in stamps]
    rows.insert(20, rows[19])  # duplicate timestamp
    series = load_series(write_csv(tmp_path / "gappy.csv", rows), "timestamp", "value", 5)
    assert len(series.values) == 60
    assert series.missing_steps == 2 and series.values[10] is None
    assert series.duplicate_rows == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: rows.__setitem__(100, [rows[100][0], "abc"]), "row 102: value 'abc'"),
        (lambda rows: rows.__setitem__(100, ["yesterday", "1"]), "row 102: cannot parse time"),
        (lambda rows: rows.__setitem__(100, [rows[10][0], "1"]), "timestamps go backwards"),
        (lambda rows: rows.__setitem__(100, [rows[100][0]]), "row 102 has 1 fields"),
        (lambda rows: rows.__delitem__(slice(20, None)), "at least 50"),
    ],
)
def test_malformed_files_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[list[list[str]]], None],
    message: str,
) -> None:
    rows = [[(START + timedelta(hours=i)).isoformat(), str(float(i))] for i in range(200)]
    mutate(rows)
    path = write_csv(tmp_path / "bad.csv", rows)
    code, out, err = run(
        ["--csv", str(path), "--time-column", "timestamp", "--value-column", "value", "--interval-minutes", "60"],
        capsys,
    )
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_wrong_columns_interval_file_and_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = nab_like(tmp_path / "ok.csv", n=100)
    base = ["--csv", str(path), "--time-column", "timestamp", "--interval-minutes", "60"]
    code, _, err = run([*base, "--value-column", "cpu"], capsys)
    assert code == 2 and "no column 'cpu'" in err
    code, _, err = run(
        ["--csv", str(path), "--time-column", "timestamp", "--value-column", "value", "--interval-minutes", "5"], capsys
    )
    assert code == 2 and "60 minutes apart" in err
    code, _, err = run([*base, "--value-column", "value", "--csv", str(tmp_path / "nope.csv")], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run([*base, "--value-column", "value", "--horizon", "x"], capsys)
    assert code == 2 and "invalid int value" in err
    code, _, err = run([*base, "--value-column", "value", "--score-from", "5000"], capsys)
    assert code == 2 and "outside the series" in err
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    code, _, err = run([*base, "--value-column", "value", "--csv", str(binary)], capsys)
    assert code == 2 and "Traceback" not in err


def test_policy_file_adds_a_scheduled_run_and_bad_policies_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = nab_like(tmp_path / "series.csv", n=24 * 9)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "policies:\n"
        "  - kind: scheduled\n"
        "    policy_id: mornings\n"
        "    windows:\n"
        "      - {cron: '0 6 * * *', timezone: UTC, duration_minutes: 240, min_replicas: 15}\n"
        "  - kind: target_tracking\n"
        "    policy_id: cpu\n"
        "    target_utilization: 0.6\n",
        encoding="utf-8",
    )
    args = [
        "--csv",
        str(path),
        "--time-column",
        "timestamp",
        "--value-column",
        "value",
        "--interval-minutes",
        "60",
        "--horizon",
        "2",
        "--no-equal-cost",
        "--policy",
        str(policy),
    ]
    code, out, err = run(args, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert set(result["policies"]) >= {"reactive", "predictive", "scheduled", "oracle"}
    assert result["policies"]["reactive"]["target_utilization"] == 0.6  # from the file
    assert result["settings"]["policies_from_file"] == ["mornings", "cpu"]
    policy.write_text('{"kind": "scheduled", "windows": [{"cron": "bad", "duration_minutes": 5}]}')
    code, out, err = run(args, capsys)
    assert code == 2 and "invalid policy" in err and out == ""


def test_load_series_rejects_non_positive_interval(tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match="positive"):
        load_series(nab_like(tmp_path / "s.csv", n=60), "timestamp", "value", 0)


def test_without_json_people_get_the_same_figures_as_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--csv", str(nab_like(tmp_path / "series.csv")), "--time-column", "timestamp", "--value-column",
            "value", "--interval-minutes", "60", "--horizon", "3"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    result = json.loads(out)
    code, text, err = run(argv, capsys, as_json=False)
    assert code == 0, err
    assert not text.lstrip().startswith("{")
    assert f"{result['series']['steps']} steps of 60 min" in text
    assert f"wMAPE {result['forecast']['wmape']:.4f}" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] and
            line.split()[0] in result["policies"]}
    assert set(rows) == set(result["policies"])
    for name, figures in result["policies"].items():
        assert rows[name][1] == f"{100 * figures['under_provisioned_fraction']:.2f}"
        assert rows[name][5] == f"{figures['replica_hours']:.1f}"
    equal_cost = result["equal_cost"]
    assert f"reactive tuned to target {equal_cost['reactive_target_utilization']:.3f}" in text
