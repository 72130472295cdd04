"""Authenticated forecaster snapshots: HMAC-SHA256 with SNAPSHOT_SIGNING_KEY over the workload and the blob.

A snapshot's inner layer is a full pickle (``OnlineForecaster.to_snapshot``), and ``model-snapshots`` is a
changelog topic: whoever can write that topic could otherwise run code in the worker. The engine signs every
snapshot it stores and verifies the signature, in constant time, before a snapshot reaches the unpickler; an
unsigned snapshot, one signed with another key, or one copied from another workload is refused (logged,
counted in ``scaling_snapshots_refused_total``) and the model is started anew from the windows kept in the
workload's state.
"""

from __future__ import annotations

import hashlib
import hmac

from pipeline.config import Settings

#: Shortest key accepted: 128 bits.
MIN_KEY_BYTES = 16
_DOMAIN = b"forecaster-snapshot/v1\x00"


class SnapshotKeyMissing(ValueError):
    """Forecasting is on (so snapshots are written and read) but SNAPSHOT_SIGNING_KEY is not set."""


class SnapshotSigner:
    """Signs and verifies snapshots of one worker fleet (every worker shares the key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"SNAPSHOT_SIGNING_KEY must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "SnapshotSigner(key=***)"

    def _mac(self, workload_key: str, blob: bytes) -> bytes:
        message = _DOMAIN + workload_key.encode() + b"\x00" + blob
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def sign(self, workload_key: str, blob: bytes) -> str:
        """The signature (hex) of the snapshot ``blob`` of ``tenant/workload``."""
        return self._mac(workload_key, blob).hex()

    def verify(self, workload_key: str, blob: bytes, signature: str | None) -> bool:
        """Whether ``signature`` is this key's signature of ``blob`` for ``workload_key`` (constant time)."""
        if not signature:
            return False
        try:
            given = bytes.fromhex(signature)
        except ValueError:
            return False
        return hmac.compare_digest(given, self._mac(workload_key, blob))


def signer_of(settings: Settings) -> SnapshotSigner | None:
    """The fleet's signer; ``None`` without SNAPSHOT_SIGNING_KEY (the engine then neither writes nor reads
    snapshots; the worker does not start that way while forecasting is on: :func:`require_key`)."""
    if settings.snapshot_signing_key is None:
        return None
    return SnapshotSigner(settings.snapshot_signing_key.get_secret_value().encode())


def require_key(settings: Settings) -> None:
    """Raise :class:`SnapshotKeyMissing` when forecasting is on without a usable SNAPSHOT_SIGNING_KEY."""
    if not (settings.scaling_enabled and settings.scaling_forecast_enabled):
        return
    if settings.snapshot_signing_key is None:
        raise SnapshotKeyMissing(
            "SNAPSHOT_SIGNING_KEY is not set: forecaster snapshots are signed with it (set the same secret of "
            f"at least {MIN_KEY_BYTES} bytes on every worker, or SCALING_FORECAST_ENABLED=false)"
        )
    signer_of(settings)  # too short: ValueError with the reason
