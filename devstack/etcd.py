"""etcd server (one member) built from the Go module proxy, the storage of the local kube-apiserver.

The wrapper module ``go/etcd`` requires ``go.etcd.io/etcd/server/v3`` at a published 3.7 release and
has a ``main.go`` that calls ``etcdmain.Main`` like upstream's own command (whose main package lives in
etcd's unpublished root module). Debian's etcd 3.4 is too old for current kube-apiservers.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from devstack import gobuild, process
from devstack.base import Service, StackContext

CLIENT_PORT = 2379
PEER_PORT = 2380
MEMBER_NAME = "devstack"


class Etcd(Service):
    name = "etcd"
    ports = (CLIENT_PORT, PEER_PORT)
    start_timeout = 60.0

    def binary(self, ctx: StackContext) -> Path:
        return gobuild.build(ctx, self.name, "etcd", ".")

    def install(self, ctx: StackContext) -> None:
        self.binary(ctx)

    def prepare(self, ctx: StackContext) -> None:
        ctx.data_dir(self.name).chmod(0o700)  # etcd warns about anything wider

    def process_env(self, ctx: StackContext) -> dict[str, str]:
        # A soft heap limit: the Go runtime collects harder before the server grows past it.
        return {**super().process_env(ctx), "GOMEMLIMIT": "256MiB"}

    def command(self, ctx: StackContext) -> list[str]:
        client = f"http://127.0.0.1:{CLIENT_PORT}"
        peer = f"http://127.0.0.1:{PEER_PORT}"
        return [
            str(self.binary(ctx)),
            f"--name={MEMBER_NAME}",
            f"--data-dir={ctx.data_dir(self.name)}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={MEMBER_NAME}={peer}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=devstack",
            # Keep the history, and so the memory, of a long-running dev stack small.
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=10m",
            "--quota-backend-bytes=1073741824",
            "--log-level=warn",
        ]

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(CLIENT_PORT):
            return False
        url = f"http://127.0.0.1:{CLIENT_PORT}/health"
        with urllib.request.urlopen(url, timeout=3.0) as response:
            body: dict[str, object] = json.loads(response.read())
        return body.get("health") == "true"

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {}

    def address(self, ctx: StackContext) -> str:
        return f"http://127.0.0.1:{CLIENT_PORT}"
