"""Turning raw message bytes into typed events, or into a precise reason why not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from pipeline.events.models import Event

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Invalid:
    """Why an input was refused: ``reason`` is a short stable label (a metric label), ``detail`` prose."""

    reason: str
    detail: str


def decode(raw: bytes | str | None, model: type[E]) -> E | Invalid:
    """Parse JSON bytes and validate them against ``model``'s schema: the event, or why not."""
    if raw is None:
        return Invalid("empty", "the message has no value")
    try:
        return model.model_validate_json(raw)  # the common case, in one pass
    except ValidationError:
        pass  # parse again in steps, to say precisely what is wrong
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Invalid("bad-json", f"not valid JSON: {exc}")
    if not isinstance(payload, dict):
        return Invalid("schema", f"expected a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(event)'}: {err['msg']}" for err in exc.errors()
        )
        return Invalid("schema", problems)
