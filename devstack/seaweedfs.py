"""The stack's S3 server: SeaweedFS (Apache-2.0), built from the Go module proxy.

MinIO's server is AGPL-licensed and no longer maintained as source, so the stack runs SeaweedFS's
S3 gateway in its place; the provisioner talks to it with the ``minio`` Python client exactly as it
will to a production MinIO. ``go install`` refuses SeaweedFS's module (its go.mod has a ``replace``
directive), so the wrapper module ``go/seaweedfs`` requires it and repeats that directive.

One ``weed server`` process runs the master, one volume server, the filer (LevelDB store) and the S3
gateway, all bound to 127.0.0.1, with data under ``.devstack/s3/data``. The S3 API is on 8333 and
every request must be signed with the identity in ``s3.json`` (``MINIO_ACCESS_KEY`` /
``MINIO_SECRET_KEY``, the defaults of pipeline/config.py). The other ports keep clear of every other
service of the stack (Pulsar's admin port 8080 is SeaweedFS's default volume port). Telemetry, the
Iceberg and Lance endpoints are switched off.

Bucket lifecycle configurations are stored and returned as given (Transition rules are refused with
``NotImplemented``); expiring objects by those rules is the job of SeaweedFS's lifecycle worker,
which this stack does not run.
"""

from __future__ import annotations

import json
from pathlib import Path

import urllib3
from minio import Minio

from devstack import gobuild, process
from devstack.base import Service, StackContext
from pipeline.config import Settings

S3_PORT = 8333
MASTER_PORT = 9333
VOLUME_PORT = 9334
FILER_PORT = 8888
#: SeaweedFS's gRPC ports are the HTTP ports + 10000.
GRPC_OFFSET = 10000
_DEFAULTS = Settings.model_fields
ACCESS_KEY: str = _DEFAULTS["minio_access_key"].default
SECRET_KEY: str = _DEFAULTS["minio_secret_key"].default.get_secret_value()
#: Small volumes, grown one at a time: every bucket is a SeaweedFS collection with its own volumes.
VOLUME_SIZE_LIMIT_MB = 64
MAX_VOLUMES = 300

_MASTER_TOML = """\
# Written by the devstack launcher: grow one volume at a time (each bucket is a collection).
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


class SeaweedS3(Service):
    name = "s3"
    ports = (
        S3_PORT,
        MASTER_PORT,
        VOLUME_PORT,
        FILER_PORT,
        S3_PORT + GRPC_OFFSET,
        MASTER_PORT + GRPC_OFFSET,
        VOLUME_PORT + GRPC_OFFSET,
        FILER_PORT + GRPC_OFFSET,
    )
    start_timeout = 90.0

    def binary(self, ctx: StackContext) -> Path:
        return gobuild.build(ctx, self.name, "seaweedfs", "github.com/seaweedfs/seaweedfs/weed")

    def install(self, ctx: StackContext) -> None:
        self.binary(ctx)

    def _identity_path(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name) / "s3.json"

    def prepare(self, ctx: StackContext) -> None:
        home = ctx.service_dir(self.name)
        (home / "master.toml").write_text(_MASTER_TOML)
        identities = {
            "identities": [
                {
                    "name": ACCESS_KEY,
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self._identity_path(ctx)
        path.write_text(json.dumps(identities, indent=2))
        path.chmod(0o600)

    def process_env(self, ctx: StackContext) -> dict[str, str]:
        # A soft heap limit: the Go runtime collects harder before the server grows past it.
        return {**super().process_env(ctx), "GOMEMLIMIT": "512MiB"}

    def command(self, ctx: StackContext) -> list[str]:
        home = ctx.service_dir(self.name)
        argv = [
            str(self.binary(ctx)),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={ctx.data_dir(self.name)}",
            f"-master.port={MASTER_PORT}",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            "-master.defaultReplication=000",
            "-master.telemetry=false",
            f"-volume.port={VOLUME_PORT}",
            f"-volume.max={MAX_VOLUMES}",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={FILER_PORT}",
            "-s3",
            f"-s3.port={S3_PORT}",
            f"-s3.config={self._identity_path(ctx)}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        # Unix sockets default to /tmp/seaweedfs-<kind>-<port>.sock; keep them with the stack when
        # the path fits in a socket address.
        if len(str(home / "filer.sock")) < 100:
            argv += [f"-filer.localSocket={home / 'filer.sock'}", f"-s3.localSocket={home / 's3.sock'}"]
        return argv

    def client(self, *, timeout: float = 5.0) -> Minio:
        """A ``minio`` client for the stack's S3 API that fails fast (no retries)."""
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=timeout), retries=urllib3.Retry(total=0))
        return Minio(
            f"127.0.0.1:{S3_PORT}",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
            http_client=http,
        )

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(S3_PORT):
            return False
        self.client().list_buckets()
        return True

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {
            "MINIO_ENDPOINT": f"127.0.0.1:{S3_PORT}",
            "MINIO_ACCESS_KEY": ACCESS_KEY,
            "MINIO_SECRET_KEY": SECRET_KEY,
            "MINIO_SECURE": "false",
        }

    def address(self, ctx: StackContext) -> str:
        return f"http://127.0.0.1:{S3_PORT} (S3 API)"
