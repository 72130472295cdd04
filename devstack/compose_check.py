"""compose-check, built from the Go module proxy (wrapper module ``go/compose-check``): validates a Compose
file with compose-go, the Compose Specification's reference library (what ``docker compose config`` runs),
for the tests on machines whose docker has no compose plugin."""

from __future__ import annotations

from pathlib import Path

from devstack import gobuild
from devstack.base import StackContext


def compose_check_binary(ctx: StackContext) -> Path:
    """The cached compose-check binary, built on first use."""
    return gobuild.build(ctx, "compose-check", "compose-check", ".")
