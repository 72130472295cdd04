"""Errors of the provisioners: retryable (transient) versus not (permanent).

The executor retries a :class:`TransientError` with backoff and gives up at once on a
:class:`PermanentError`; a :class:`BackendUnavailable` (a transient error: the backend cannot be reached at
all) is waited for without counting as an attempt. Every provisioner method raises only these (or lets an
``asyncio.CancelledError`` through); the backend's own exception is kept as ``__cause__``.
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base of every error a provisioner raises."""

    #: Whether the same call may succeed later without a change of input or configuration.
    retryable: bool = False

    def __init__(self, message: str, *, resource: str | None = None) -> None:
        super().__init__(message)
        self.resource = resource

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.resource}: {message}" if self.resource else message


class TransientError(ProvisioningError):
    """The backend is unreachable, timed out, overloaded (5xx, 429) or busy: retry later."""

    retryable = True


class BackendUnavailable(TransientError):
    """The backend cannot be reached at all: connection refused, its name does not resolve, the connection
    cannot be opened in time. Unlike other transient errors (a reachable server's 5xx, 429 or slow answer) this
    says nothing about the request, only that the backend is not (yet) up: the executor waits for it without
    spending the command's attempts (``PROVISIONING_BACKEND_WAIT_SECONDS``)."""

    def __init__(self, message: str, *, resource: str | None = None, address: str | None = None) -> None:
        super().__init__(message, resource=resource)
        #: Where the backend was looked for (a URL or host:port), for the "waiting for backend" status.
        self.address = address


class PermanentError(ProvisioningError):
    """Bad input or configuration, or a state the provisioner must not change by itself: do not retry."""

    retryable = False


class UnsafeNameError(PermanentError, ValueError):
    """A tenant id (or a name derived from it) that cannot be mapped safely to a backend's naming rules."""

    def __init__(self, value: object, reason: str, *, backend: str | None = None) -> None:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        where = f" for {backend}" if backend else ""
        super().__init__(f"unsafe name {shown}{where}: {reason}", resource=backend)
        self.value = value
        self.reason = reason
        self.backend = backend


class UnknownTierError(PermanentError, ValueError):
    """A tenant asked for a tier the tiers file does not define."""


class DriftError(PermanentError):
    """The resource exists with a setting the backend cannot change in place (e.g. an index's shard count).

    Fixing it needs a human decision (re-create it with ``purge``), so it is not retried.
    """
