"""helm, built from the Go module proxy like the stack's other Go tools (wrapper module ``go/helm``).

Not a server: the chart tests (tests/deploy/test_helm_chart.py) call :func:`helm_binary` to lint and render
``deploy/helm/provisioning-service``; the rendered objects are then validated by the local kube-apiserver.
"""

from __future__ import annotations

from pathlib import Path

from devstack import gobuild
from devstack.base import StackContext

#: helm's own version string (``helm version``), set at link time as its release builds do.
HELM_VERSION = "v4.3.2"


def helm_binary(ctx: StackContext) -> Path:
    """The cached helm binary, built on first use (a few minutes on two cores, then reused)."""
    return gobuild.build(
        ctx, "helm", "helm", "helm.sh/helm/v4/cmd/helm",
        variables={"helm.sh/helm/v4/internal/version.version": HELM_VERSION},
    )
