"""The shared Kubernetes client: loads its own configuration, never the package's process-wide default."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.config.config_exception import ConfigException

from pipeline.kube_client import KubeClient

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://127.0.0.1:16443", insecure-skip-tls-verify: true}
- name: b
  cluster: {server: "https://127.0.0.1:26443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: not-a-real-token}
contexts:
- name: ctx-a
  context: {cluster: a, user: u}
- name: ctx-b
  context: {cluster: b, user: u}
current-context: ctx-a
"""


def test_each_client_has_its_own_configuration_and_context(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    default_before = k8s.Configuration.get_default_copy().host
    first, second = KubeClient(path), KubeClient(path, context="ctx-b")
    assert first.get().configuration.host == "https://127.0.0.1:16443"
    assert second.get().configuration.host == "https://127.0.0.1:26443"
    assert k8s.Configuration.get_default_copy().host == default_before
    assert first.get() is first.get()  # built once
    built = first.get()
    first.close()
    assert first.get() is not built  # rebuilt after close
    first.close()
    second.close()


def test_without_a_kubeconfig_outside_a_cluster_the_error_reaches_the_caller() -> None:
    with pytest.raises(ConfigException):
        KubeClient(None).get()
