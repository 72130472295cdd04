"""``python -m devstack doctor``: the parsers on the tools' real output shapes, and each check's verdict."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack import doctor, stack
from devstack.base import StackContext

OPENJDK_17 = 'openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)\n'
TEMURIN_25 = 'openjdk version "25.0.1" 2025-10-21 LTS\nOpenJDK Runtime Environment Temurin-25.0.1+8\n'
JAVA_8 = 'openjdk version "1.8.0_392"\nOpenJDK Runtime Environment (build 1.8.0_392-b08)\n'


def test_java_major_reads_modern_and_legacy_version_strings() -> None:
    assert doctor.java_major(OPENJDK_17) == 17
    assert doctor.java_major(TEMURIN_25) == 25
    assert doctor.java_major(JAVA_8) == 8
    assert doctor.java_major("command not found") is None


@given(st.integers(1, 99), st.integers(0, 99))
def test_go_version_and_directive_read_any_release(major: int, minor: int) -> None:
    assert doctor.go_version(f"go version go{major}.{minor}.3 linux/amd64") == (major, minor)
    assert doctor.go_directive(f"module x\n\ngo {major}.{minor}.0\n\nrequire y v1\n") == (major, minor)


def test_required_go_is_the_newest_directive_of_the_stacks_builds() -> None:
    assert doctor.required_go(["go 1.22.0\n", "module m\ngo 1.26.0\n", "no directive"]) == (1, 26)
    assert doctor.required_go([]) is None
    shipped = [p.read_text() for p in doctor.GO_MODULES.glob("*/go.mod")]
    assert shipped and doctor.required_go(shipped) is not None


def test_jdk_checks_want_exactly_17_and_21_or_newer() -> None:
    home = Path("/jdk")
    assert doctor.check_jdk("JDK 17", home, OPENJDK_17, 17, 17).ok
    assert not doctor.check_jdk("JDK 17", home, TEMURIN_25, 17, 17).ok
    assert doctor.check_jdk("JDK 21+", home, TEMURIN_25, 21, None).ok
    assert not doctor.check_jdk("JDK 21+", home, OPENJDK_17, 21, None).ok
    missing = doctor.check_jdk("JDK 21+", home, None, 21, None)
    assert not missing.ok and "/jdk" in missing.sentence


def test_go_check_compares_with_what_the_builds_need() -> None:
    assert doctor.check_go("go version go1.26.8 linux/amd64", (1, 26)).ok
    old = doctor.check_go("go version go1.21.0 linux/amd64", (1, 26))
    assert not old.ok and "1.21" in old.sentence and "1.26" in old.sentence
    assert not doctor.check_go(None, (1, 26)).ok
    assert not doctor.check_go("garbage", (1, 26)).ok


def test_python_disk_and_tool_checks() -> None:
    assert doctor.check_python((3, 11, 7)).ok
    assert not doctor.check_python((3, 10, 12)).ok
    assert doctor.check_disk(Path("/"), doctor.MIN_FREE_BYTES).ok
    low = doctor.check_disk(Path("/"), 287 * 1024**2)
    assert not low.ok and "0.3 GiB" in low.sentence
    assert not doctor.check_tool("mvn", None, "why").ok
    assert doctor.check_tool("mvn", "/usr/bin/mvn", "why").ok


def test_ports_are_a_problem_only_when_a_foreign_program_holds_them() -> None:
    assert doctor.check_ports([("kafka", 9092, False, False), ("etcd", 2379, True, True)]).ok
    foreign = doctor.check_ports([("kafka", 9092, True, False), ("etcd", 2379, True, True)])
    assert not foreign.ok and "9092 (kafka)" in foreign.sentence and "2379" not in foreign.sentence


def test_every_problem_is_one_sentence_and_the_report_says_which(tmp_path: Path) -> None:
    def broken(argv: Sequence[str]) -> str | None:
        return None  # no java, no go

    ctx = StackContext(cache_dir=tmp_path / "cache", home=tmp_path / "home")
    findings = doctor.examine(ctx, run=broken)
    assert {f.check for f in findings} >= {"python", "JDK 17", "JDK 21+", "mvn", "go", "disk", "ports"}
    assert not any(f.ok for f in findings if f.check in ("JDK 17", "JDK 21+"))
    text = doctor.report(findings)
    assert len(text.splitlines()) == len(findings)
    assert all("\n" not in f.sentence and f.sentence.endswith(".") for f in findings)
    assert "Traceback" not in text


def test_the_command_exits_with_the_verdict_it_prints() -> None:
    done = subprocess.run([sys.executable, "-m", "devstack", "doctor"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 7, done.stdout
    problems = [line for line in lines if line.startswith("PROBLEM")]
    assert done.returncode == (1 if problems else 0), done.stdout


@pytest.mark.parametrize("name", stack.SERVICES)
def test_every_service_declares_the_ports_the_doctor_checks(name: str) -> None:
    assert stack.load(name).ports, f"{name} declares no ports: the doctor could not see a clash"
