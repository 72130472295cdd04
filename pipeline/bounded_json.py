"""Parsing untrusted JSON with bounded cost: size checked on the raw bytes and nesting depth checked by a
linear scan, both before any parser runs, so no input can exhaust memory or the stack.

Every boundary that parses JSON from outside the process (events, the bridge, REST bodies, peer calls)
goes through :func:`loads`; whatever is wrong comes back as one :class:`JsonRefused` with a stable reason.
Non-finite numbers (``NaN``, ``Infinity``, ``1e999``) are refused by the parser too, but the typed models
check them again, because pydantic's own JSON parser accepts them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

#: Largest JSON document (event or request body) accepted, in bytes: far above any real event (< 4 KiB),
#: and small enough that a dead letter quoting one stays well under Kafka's 1 MB message limit.
MAX_DOCUMENT_BYTES = 256 * 1024
#: Deepest nesting of arrays and objects accepted; the deepest real document (a compute request) has 3.
MAX_DEPTH = 32

# Tokens that matter for nesting: an escape (two characters, so an escaped quote never ends a string), a
# quote, an opening and a closing bracket. Everything else is skipped by the regex engine.
_TOKENS_BYTES = re.compile(rb'(\\.)|(")|([\[{])|([\]}])', re.DOTALL)
_TOKENS_STR = re.compile(r'(\\.)|(")|([\[{])|([\]}])', re.DOTALL)
_ESCAPE, _QUOTE, _OPEN, _CLOSE = 1, 2, 3, 4


class JsonRefused(ValueError):
    """Why a JSON document was refused: ``reason`` is a short stable label, ``detail`` prose."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def exceeds_depth(raw: bytes | str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests arrays/objects deeper than ``max_depth`` (brackets inside strings do not count).

    One pass without recursion; it stops at the first bracket too deep. Invalid JSON may be counted
    loosely: the parser refuses it anyway.
    """
    # No document with fewer opening brackets than the limit can nest deeper than it (brackets inside strings
    # only add to the count): two scans in C spare almost every real event the token loop.
    opens = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else raw.count("[") + raw.count("{")
    if opens <= max_depth:
        return False
    tokens = _TOKENS_BYTES if isinstance(raw, bytes) else _TOKENS_STR
    depth = 0
    in_string = False
    for match in tokens.finditer(raw):  # type: ignore[arg-type]  # the pattern matches raw's type
        kind = match.lastindex
        if in_string:
            if kind == _QUOTE:
                in_string = False
        elif kind == _QUOTE:
            in_string = True
        elif kind == _OPEN:
            depth += 1
            if depth > max_depth:
                return True
        elif kind == _CLOSE:
            depth -= 1
    return False


def check_bounds(raw: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JsonRefused` if ``raw`` is larger or deeper than allowed (nothing is parsed)."""
    size = len(raw)
    if size > max_bytes:
        raise JsonRefused("too-large", f"{size} bytes, more than the {max_bytes} accepted")
    if exceeds_depth(raw, max_depth):
        raise JsonRefused("too-deep", f"arrays/objects nested deeper than {max_depth} levels")


def loads(raw: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The document ``raw`` holds, or :class:`JsonRefused` (reasons: too-large, too-deep, bad-json)."""
    check_bounds(raw, max_bytes, max_depth)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JsonRefused("bad-json", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. a str with lone surrogates
        raise JsonRefused("bad-json", f"not valid JSON: {exc}") from None
