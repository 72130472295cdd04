"""docs/architecture.md walks an event through the code by name: every module, function and file it names
exists, so the walk cannot drift from the code unnoticed."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("pipeline", "agents", "tables", "web", "devstack")
_ALTERNATIVES = "|".join(PACKAGES)
_DOTTED = re.compile(rf"`((?:{_ALTERNATIVES})(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
_PATH = re.compile(rf"`((?:{_ALTERNATIVES}|tests|bench|deploy|docs)/[A-Za-z0-9_./-]+)`")


def dotted_names() -> list[str]:
    return sorted(set(_DOTTED.findall(DOC.read_text())))


def paths() -> list[str]:
    return sorted(set(_PATH.findall(DOC.read_text())))


def resolve(name: str) -> object:
    """Import the longest module prefix of ``name`` and get the rest as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(name)


def test_the_walk_names_code() -> None:
    assert len(dotted_names()) >= 10 and len(paths()) >= 3  # the pattern still finds the names


@pytest.mark.parametrize("name", dotted_names())
def test_every_dotted_name_exists(name: str) -> None:
    resolve(name)


@pytest.mark.parametrize("path", paths())
def test_every_path_exists(path: str) -> None:
    assert (ROOT / path).exists(), path
