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


class StackUpError(DevstackError):
    """One or more services of an ``up`` failed: every one of them, each with its own message and log tail."""

    def __init__(self, errors: list[DevstackError]) -> None:
        self.errors = errors
        super().__init__(", ".join(e.service for e in errors), f"{len(errors)} service(s) failed")

    def __str__(self) -> str:
        return "\n\n".join(str(e) for e in self.errors)
