"""Errors of the local stack launcher, each carrying what a user needs to act on it."""

from __future__ import annotations


class DevstackError(RuntimeError):
    """A service could not be installed or started; the message says why and shows its log tail."""

    def __init__(self, service: str, message: str, log_tail: str = "") -> None:
        self.service = service
        self.log_tail = log_tail
        text = f"[{service}] {message}"
        if log_tail:
            text += f"\n--- last lines of the {service} log ---\n{log_tail}"
        super().__init__(text)
