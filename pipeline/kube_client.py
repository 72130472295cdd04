"""The one way the service connects to Kubernetes: a lazily built ``ApiClient`` per user of it.

From a kubeconfig file (and context) when one is configured, else the pod's in-cluster service account.
The configuration is loaded into a client of its own, never into the kubernetes package's process-wide
default, so the provisioner, the compute provider and the scaling applier cannot change each other's
connection. Blocking: call it from a thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

logger = logging.getLogger(__name__)


class KubeClient:
    """A thread-safe, lazily created ``ApiClient``; :meth:`close` drops it (the next :meth:`get` reconnects).

    :meth:`get` raises what loading the configuration raises (``ConfigException``, ``OSError``): each
    caller turns that into its own error.
    """

    def __init__(self, kubeconfig: Path | str | None = None, context: str | None = None) -> None:
        self._kubeconfig = str(kubeconfig) if kubeconfig else None
        self._context = context
        self._lock = threading.Lock()
        self._api: k8s.ApiClient | None = None

    def get(self) -> k8s.ApiClient:
        with self._lock:
            if self._api is None:
                if self._kubeconfig is not None:
                    self._api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                        config_file=self._kubeconfig, context=self._context, persist_config=False
                    )
                else:
                    configuration = k8s.Configuration()
                    k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                        client_configuration=configuration
                    )
                    self._api = k8s.ApiClient(configuration)
            return self._api

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            try:
                api.close()  # type: ignore[no-untyped-call]
            except Exception:  # closing a broken connection pool must not hide the error being handled
                logger.debug("kubernetes api client close failed", exc_info=True)
