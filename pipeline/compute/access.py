"""Access details of an allocation and the masking that keeps their secrets out of logs and records.

* A fresh ed25519 SSH key pair per allocation (``cryptography``; OpenSSH private and public formats).
  The private key is returned ONCE to the requester (:meth:`AccessDetails.reveal`) and never stored:
  records hold :class:`MaskedAccess` (:meth:`AccessDetails.public_view`).
* A Jupyter URL with a random token (``secrets.token_urlsafe``) and a monitoring (Grafana) URL.
* :class:`SecretMaskingFilter` — a ``logging.Filter`` that masks registered secrets, OpenSSH/PEM private
  key blocks and ``token=`` query values; :func:`install_secret_masking` puts it on handlers.
  :func:`mask_value` masks secrets in a JSON-like structure (audit records, events).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, SecretStr

from pipeline.compute.backend import AccessSetup

logger = logging.getLogger(__name__)

MASK = "***"

_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL
)
_TOKEN_PARAM = re.compile(r"((?:token|access_token|api_key|password|secret)=)[^&\s'\"#]+", re.IGNORECASE)
_SECRET_ITEM = re.compile(
    r"""((?:["']?)\w*(?:private_key|jupyter_token|api_token|password|secret)["']?\s*[:=]\s*["'])[^"']+""",
    re.IGNORECASE,
)
_SECRET_KEYS = re.compile(r"(private_key|token|secret|password|credential)", re.IGNORECASE)
_PUBLIC_KEY_NAMES = re.compile(r"(public_key|client_token|fingerprint|_issued)$", re.IGNORECASE)


class _SecretRegistry:
    """Exact secret strings to mask wherever they appear (bounded, most recent kept)."""

    def __init__(self, limit: int = 1_000) -> None:
        self._secrets: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def add(self, *values: str) -> None:
        with self._lock:
            for value in values:
                if len(value) >= 8:
                    self._secrets[value] = None
                    self._secrets.move_to_end(value)
            while len(self._secrets) > self._limit:
                self._secrets.popitem(last=False)

    def discard(self, *values: str) -> None:
        with self._lock:
            for value in values:
                self._secrets.pop(value, None)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self._secrets)


REGISTRY = _SecretRegistry()


def mask_text(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with private-key blocks, ``token=`` values and registered/extra secrets masked."""
    if not text:
        return text
    out = _PRIVATE_KEY_BLOCK.sub(f"<private key {MASK}>", text)
    out = _TOKEN_PARAM.sub(rf"\g<1>{MASK}", out)
    out = _SECRET_ITEM.sub(rf"\g<1>{MASK}", out)
    for secret in (*REGISTRY.snapshot(), *extra):
        if secret and secret in out:
            out = out.replace(secret, MASK)
    return out


def mask_value(value: Any, extra: Iterable[str] = ()) -> Any:
    """A copy of a JSON-like ``value`` safe for audit records and events: values under secret-looking
    keys (``*private_key*``, ``*token*``, ``*secret*``, ``*password*``; not ``*public_key``,
    ``client_token``) are replaced and every string is passed through :func:`mask_text`."""
    extra = tuple(extra)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            if _SECRET_KEYS.search(name) and not _PUBLIC_KEY_NAMES.search(name) and isinstance(item, str):
                out[key] = MASK if item else item
            else:
                out[key] = mask_value(item, extra)
        return out
    if isinstance(value, list | tuple):
        return [mask_value(item, extra) for item in value]
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str):
        return mask_text(value, extra)
    return value


class SecretMaskingFilter(logging.Filter):
    """Rewrites each record's message (and formatted exception) with :func:`mask_text`. Never drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's error path
            return True
        masked = mask_text(message)
        if masked != message or record.args:
            record.msg = masked
            record.args = ()  # not None: formatters such as mode's turn None into (None,) and break
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


def install_secret_masking(handlers: Iterable[logging.Handler] | None = None) -> SecretMaskingFilter:
    """Add one :class:`SecretMaskingFilter` to ``handlers`` (default: the root logger's handlers)."""
    masking = SecretMaskingFilter()
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, SecretMaskingFilter) for f in handler.filters):
            handler.addFilter(masking)
    return masking


class SshKeyPair(BaseModel):
    """An ed25519 key pair in OpenSSH formats; the private key is a ``SecretStr``."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    public_key: str
    private_key: SecretStr
    fingerprint: str


def ssh_fingerprint(public_key: str) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of an ``ssh-ed25519 AAAA... comment`` line."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def generate_ssh_key_pair(comment: str = "") -> SshKeyPair:
    """A fresh ed25519 key pair (private key: unencrypted OpenSSH format, registered for masking)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_line = public.decode() + (f" {comment}" if comment else "")
    REGISTRY.add(private, *_key_body_lines(private))
    return SshKeyPair(public_key=public_line, private_key=SecretStr(private), fingerprint=ssh_fingerprint(public_line))


def _key_body_lines(private: str) -> list[str]:
    return [line for line in private.splitlines() if line and not line.startswith("-----")]


def new_jupyter_token() -> SecretStr:
    """A random 256-bit URL-safe token, registered for masking."""
    token = secrets.token_urlsafe(32)
    REGISTRY.add(token)
    return SecretStr(token)


class AccessConfig(BaseModel):
    """Where access endpoints live. ``jupyter_url_template`` and ``monitoring_url_template`` are
    ``str.format`` templates with ``{host}``, ``{allocation_id}``, ``{request_id}`` (and the Jupyter one
    gets ``{token}`` appended as a query parameter)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    ssh_user: str = "ubuntu"
    jupyter_url_template: str = "https://{host}:8888/lab"
    monitoring_url_template: str = (
        "http://127.0.0.1:3000/d/compute-allocation/compute-allocation?var-allocation={allocation_id}"
    )


class AccessSecrets(BaseModel):
    """Secrets minted for one allocation attempt before the machine exists."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    ssh: SshKeyPair
    jupyter_token: SecretStr

    @classmethod
    def generate(cls, comment: str = "") -> AccessSecrets:
        return cls(ssh=generate_ssh_key_pair(comment), jupyter_token=new_jupyter_token())

    def setup(self) -> AccessSetup:
        """What the backend needs to configure the machine (public key + Jupyter token)."""
        return AccessSetup(ssh_public_key=self.ssh.public_key, jupyter_token=self.jupyter_token)

    def forget(self) -> None:
        """Stop masking these secrets (call when the allocation is gone and nobody can log them)."""
        private = self.ssh.private_key.get_secret_value()
        REGISTRY.discard(private, *_key_body_lines(private), self.jupyter_token.get_secret_value())


class MaskedAccess(BaseModel):
    """The public view of access details: safe for records, events, logs and the status endpoint."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    allocation_id: str
    ssh_user: str
    ssh_host: str | None
    ssh_port: int | None
    ssh_public_key: str
    ssh_fingerprint: str
    jupyter_url: str
    monitoring_url: str
    private_key_issued: bool = True


class AccessDetails(BaseModel):
    """Full access details, secrets included. Return :meth:`reveal` to the requester once; store only
    :meth:`public_view`."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    allocation_id: str
    ssh_user: str
    ssh_host: str | None
    ssh_port: int | None
    ssh_public_key: str
    ssh_fingerprint: str
    ssh_private_key: SecretStr
    jupyter_base_url: str
    jupyter_token: SecretStr
    monitoring_url: str

    @classmethod
    def build(
        cls,
        secrets_: AccessSecrets,
        *,
        allocation_id: str,
        request_id: str,
        host: str | None,
        port: int | None,
        config: AccessConfig,
    ) -> AccessDetails:
        fields = {"host": host or "pending", "allocation_id": allocation_id, "request_id": request_id}
        return cls(
            allocation_id=allocation_id,
            ssh_user=config.ssh_user,
            ssh_host=host,
            ssh_port=port,
            ssh_public_key=secrets_.ssh.public_key,
            ssh_fingerprint=secrets_.ssh.fingerprint,
            ssh_private_key=secrets_.ssh.private_key,
            jupyter_base_url=config.jupyter_url_template.format(**fields),
            jupyter_token=secrets_.jupyter_token,
            monitoring_url=config.monitoring_url_template.format(**fields),
        )

    def _jupyter(self, token: str) -> str:
        sep = "&" if "?" in self.jupyter_base_url else "?"
        return f"{self.jupyter_base_url}{sep}token={quote(token, safe='*')}"

    def public_view(self) -> MaskedAccess:
        return MaskedAccess(
            allocation_id=self.allocation_id,
            ssh_user=self.ssh_user,
            ssh_host=self.ssh_host,
            ssh_port=self.ssh_port,
            ssh_public_key=self.ssh_public_key,
            ssh_fingerprint=self.ssh_fingerprint,
            jupyter_url=self._jupyter(MASK),
            monitoring_url=self.monitoring_url,
        )

    def reveal(self) -> dict[str, Any]:
        """The one-time response body WITH the secrets in clear (never log or store this)."""
        body = self.public_view().model_dump(mode="json")
        body["ssh_private_key"] = self.ssh_private_key.get_secret_value()
        body["jupyter_token"] = self.jupyter_token.get_secret_value()
        body["jupyter_url"] = self._jupyter(self.jupyter_token.get_secret_value())
        return body
