"""Turning raw message bytes into typed events, or into a precise reason why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from pipeline import bounded_json
from pipeline.events.models import Event

E = TypeVar("E", bound=Event)

#: Most validation problems listed in a reason; a message with thousands of bad items gets a bounded one.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Invalid:
    """Why an input was refused: ``reason`` is a short stable label (a metric label), ``detail`` prose."""

    reason: str
    detail: str


def decode(raw: bytes | str | None, model: type[E]) -> E | Invalid:
    """Parse JSON bytes and validate them against ``model``'s schema: the event, or why not. Never raises
    for any content of ``raw``."""
    if raw is None:
        return Invalid("empty", "the message has no value")
    if len(raw) > bounded_json.MAX_DOCUMENT_BYTES:
        return Invalid("too-large", f"{len(raw)} bytes, more than the {bounded_json.MAX_DOCUMENT_BYTES} accepted")
    try:
        # The common case, in one pass; pydantic's parser has its own depth limit and never recurses deeply.
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if not _document_level(exc):
            return Invalid("schema", problems(exc))  # valid JSON object, invalid fields: the errors name them
    except (ValueError, RecursionError):
        pass
    # Not JSON, or not an object: parse again in steps, to say precisely what is wrong.
    try:
        payload = bounded_json.loads(raw)
    except bounded_json.JsonRefused as exc:
        return Invalid(exc.reason, exc.detail)
    if not isinstance(payload, dict):
        return Invalid("schema", f"expected a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        return Invalid("schema", problems(exc))
    except (ValueError, RecursionError) as exc:
        return Invalid("schema", f"{type(exc).__name__}: {str(exc)[:500]}")


def _document_level(exc: ValidationError) -> bool:
    """Whether ``exc`` is about the document as a whole (not JSON, not an object) rather than its fields."""
    return any(err["type"] == "json_invalid" or not err["loc"] for err in exc.errors(include_url=False))


def problems(exc: ValidationError) -> str:
    """The validation errors of ``exc`` as one line (locations and messages, never the input's values)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    listed = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])[:200] or '(event)'}: {err['msg'][:300]}"
        for err in errors[:MAX_PROBLEMS]
    )
    more = len(errors) - MAX_PROBLEMS
    return f"{listed}; and {more} more" if more > 0 else listed
