"""Hypothesis strategies of hostile JSON values and documents, shared by the event and REST body suites."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: Numbers no boundary may accept as such (as JSON source text, since json.dumps cannot write most of them).
NON_FINITE_LITERALS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e400"]
HUGE_NUMBERS = ["1e308", "-1e308", "1e30", "123456789012345678901234567890", "9" * 400, "1e-400"]

CONTROL_CHARS = "".join(chr(c) for c in range(32)) + "\x7f\u2028\u2029\ufeff\u202e"


def deep(depth: int, kind: str = "[") -> str:
    close = "]" if kind == "[" else "}"
    opening = "[" if kind == "[" else '{"a":'
    return opening * depth + "1" + close * depth


#: Raw JSON source fragments to put where a value goes.
hostile_literals = st.one_of(
    st.sampled_from(NON_FINITE_LITERALS),
    st.sampled_from(HUGE_NUMBERS),
    st.integers(min_value=33, max_value=3000).map(deep),
    st.integers(min_value=33, max_value=3000).map(lambda n: deep(n, "{")),
    st.just('"' + "x" * 300_000 + '"'),
    st.text(alphabet=CONTROL_CHARS, min_size=1, max_size=50).map(json.dumps),
    st.text(min_size=0, max_size=200).map(json.dumps),
    st.sampled_from(["null", "true", "false", "[]", "{}", '""', "0", "-1", '"\\ud800"', "[1,2,3]"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
)


def document(fields: dict[str, str]) -> str:
    """A JSON object written from raw source fragments (which may be invalid JSON on purpose)."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


@st.composite
def hostile_document(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """``valid`` with one or more fields replaced by hostile values, unknown fields added or fields dropped,
    encoded as UTF-8, sometimes with invalid bytes spliced in."""
    fields = {k: json.dumps(v) for k, v in valid.items()}
    names = sorted(fields)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["replace", "replace", "replace", "add", "drop"]))
        if action == "replace":
            fields[draw(st.sampled_from(names))] = draw(hostile_literals)
        elif action == "add":
            fields[draw(st.text(max_size=20))] = draw(hostile_literals)
        elif fields:
            fields.pop(draw(st.sampled_from(sorted(fields))), None)
    raw = document(fields).encode("utf-8", "surrogatepass")
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        invalid_utf8 = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\xf4\x90\x80\x80"]))
        raw = raw[:at] + invalid_utf8 + raw[at:]
    return raw
