"""What the domain logic asks the agents to emit: a record for a topic, keyed by tenant."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Emit:
    topic: str
    key: str
    value: BaseModel


class Refused(Exception):
    """An input that is well-formed but cannot be acted on (unknown tenant, over quota...).

    ``reason`` is a short stable label used as a metric label and in the dead-letter record.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def derived_id(*parts: str) -> str:
    """A deterministic id from its parts, so a replayed input yields the same output ids."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
