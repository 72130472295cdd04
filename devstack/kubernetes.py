"""A real kube-apiserver (no controller-manager, no scheduler, no kubelet) over the stack's etcd.

The binary is built from the Go module proxy through the wrapper module ``go/kube-apiserver``, which
requires ``k8s.io/kubernetes`` at a published release and pins every ``k8s.io/*`` staging module to
its published ``v0.<minor>.<patch>`` (upstream replaces them with local paths, which is why
``go install`` cannot build it).

What the stack generates on first start, in the service folder (``.devstack/kubernetes``):

- ``pki/``: a self-signed CA, a serving certificate for 127.0.0.1/localhost/kubernetes.default...,
  and the service-account signing key pair (all ECDSA P-256);
- ``tokens.csv``: a static token (``--token-auth-file``) for the user ``devstack-admin`` in the group
  ``system:masters``;
- ``kubeconfig``: the server, the CA data and that token; ``exports()`` points ``KUBECONFIG`` at it.

Authorization is ``RBAC``, so RoleBindings are enforced for every other user. There is no
controller-manager, scheduler or kubelet, so (checked against v1.37.2):

- namespaces get no ``default`` ServiceAccount, and the ServiceAccount admission plugin refuses
  Pods until one exists; created Pods stay Pending;
- ResourceQuota objects are stored and returned but get no ``status`` and are not enforced (the
  admission plugin skips a quota whose status was never computed);
- Deployments and their ``scale`` subresource are stored, but nothing rolls out;
- a deleted namespace stays ``Terminating`` (its ``kubernetes`` finalizer is never removed);
- the ``kubernetes`` Service gets no Endpoints (``--endpoint-reconciler-type=none``: they may not be
  a loopback address).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
import secrets
import ssl
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack import gobuild, process
from devstack.base import Service, StackContext

SECURE_PORT = 6443
SERVICE_CIDR = "10.96.0.0/16"
FIRST_SERVICE_IP = "10.96.0.1"
ADMIN_USER = "devstack-admin"
ETCD_URL = "http://127.0.0.1:2379"
_CERT_DAYS = 3650
_SERVING_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name | None,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def kubernetes_version() -> str:
    """The k8s.io/kubernetes release the wrapper module requires (``v1.37.2``)."""
    go_mod = (gobuild.MODULES_DIR / "kube-apiserver" / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (v\d+\.\d+\.\d+)$", go_mod, re.MULTILINE)
    if match is None:
        raise ValueError("go/kube-apiserver/go.mod does not require k8s.io/kubernetes at a release")
    return match.group(1)


def _version_variables() -> dict[str, str]:
    """What Kubernetes' own build stamps into its binaries, so /version reports the real release."""
    version = kubernetes_version()
    major, minor, _ = version.removeprefix("v").split(".")
    variables = {}
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        variables.update(
            {
                f"{package}.gitVersion": version,
                f"{package}.gitMajor": major,
                f"{package}.gitMinor": minor,
                f"{package}.gitTreeState": "clean",
            }
        )
    return variables


class KubeApiServer(Service):
    name = "kubernetes"
    ports = (SECURE_PORT,)
    depends_on = ("etcd",)
    start_timeout = 180.0

    # -- files ----------------------------------------------------------------------------------

    def pki(self, ctx: StackContext) -> Path:
        path = ctx.service_dir(self.name) / "pki"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def kubeconfig_path(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name) / "kubeconfig"

    def token_path(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name) / "tokens.csv"

    def admin_token(self, ctx: StackContext) -> str:
        return self.token_path(ctx).read_text().split(",", 1)[0].strip()

    def binary(self, ctx: StackContext) -> Path:
        return gobuild.build(
            ctx,
            self.name,
            "kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            variables=_version_variables(),
        )

    def install(self, ctx: StackContext) -> None:
        self.binary(ctx)

    def _ensure_pki(self, ctx: StackContext) -> None:
        pki = self.pki(ctx)
        if all((pki / f).exists() for f in ("ca.crt", "apiserver.crt", "apiserver.key", "sa.key", "sa.pub")):
            return
        ctx.reporter.note(self.name, f"generating a CA, a serving certificate and service-account keys in {pki}")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate("devstack-kubernetes-ca", ca_key.public_key(), None, ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = _certificate(
            "kube-apiserver",
            server_key.public_key(),
            ca_cert.subject,
            ca_key,
            ca=False,
            dns=_SERVING_NAMES,
            ips=("127.0.0.1", FIRST_SERVICE_IP),
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        _write_key(pki / "ca.key", ca_key)
        (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pki / "apiserver.key", server_key)
        (pki / "apiserver.crt").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pki / "sa.key", sa_key)
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def prepare(self, ctx: StackContext) -> None:
        self._ensure_pki(ctx)
        tokens = self.token_path(ctx)
        if not tokens.exists():
            tokens.write_text(f'{secrets.token_hex(24)},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
            tokens.chmod(0o600)
        self._write_kubeconfig(ctx)

    def _write_kubeconfig(self, ctx: StackContext) -> None:
        ca_data = base64.b64encode((self.pki(ctx) / "ca.crt").read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devstack",
                    "cluster": {
                        "server": f"https://127.0.0.1:{SECURE_PORT}",
                        "certificate-authority-data": ca_data,
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin_token(ctx)}}],
            "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": ADMIN_USER}}],
            "current-context": "devstack",
            "preferences": {},
        }
        path = self.kubeconfig_path(ctx)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    # -- process --------------------------------------------------------------------------------

    def process_env(self, ctx: StackContext) -> dict[str, str]:
        # A soft heap limit: the Go runtime collects harder before the server grows past it.
        return {**super().process_env(ctx), "GOMEMLIMIT": "1GiB"}

    def command(self, ctx: StackContext) -> list[str]:
        pki = self.pki(ctx)
        return [
            str(self.binary(ctx)),
            f"--etcd-servers={ETCD_URL}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={SECURE_PORT}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={self.token_path(ctx)}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The Endpoints of the `kubernetes` Service may not be a loopback address, and nothing here
            # reaches the API server through that Service: keep them unmanaged.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ]

    # -- health ---------------------------------------------------------------------------------

    def _readyz(self, ctx: StackContext) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki(ctx) / "ca.crt"))
        request = urllib.request.Request(
            f"https://127.0.0.1:{SECURE_PORT}/readyz",
            headers={"Authorization": f"Bearer {self.admin_token(ctx)}"},
        )
        with urllib.request.urlopen(request, timeout=5.0, context=context) as response:  # noqa: S310
            ready: bool = response.status == 200 and response.read().strip() == b"ok"
        return ready

    def healthy(self, ctx: StackContext) -> bool:
        if not process.port_in_use(SECURE_PORT) or not self.kubeconfig_path(ctx).exists():
            return False
        if not self._readyz(ctx):
            return False
        from kubernetes import client, config  # heavy import, only once the server answers

        api_client = config.new_client_from_config(config_file=str(self.kubeconfig_path(ctx)))  # type: ignore[no-untyped-call]
        api = client.CoreV1Api(api_client)
        try:
            namespaces = api.list_namespace(_request_timeout=5)
        finally:
            api.api_client.close()
        return any(ns.metadata is not None and ns.metadata.name == "kube-system" for ns in namespaces.items)

    def exports(self, ctx: StackContext) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig_path(ctx))}

    def address(self, ctx: StackContext) -> str:
        return f"https://127.0.0.1:{SECURE_PORT}"
