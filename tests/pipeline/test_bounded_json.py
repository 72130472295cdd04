"""The depth check before parsing agrees with the nesting the parser sees, on both of its paths."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.bounded_json import JsonRefused, exceeds_depth, loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=4),
    max_leaves=60,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300)
@given(json_values, st.integers(min_value=0, max_value=8))
def test_the_check_matches_the_real_nesting_for_bytes_and_text(value: Any, limit: int) -> None:
    text = json.dumps(value)
    expected = depth(value) > limit
    assert exceeds_depth(text, limit) is expected
    assert exceeds_depth(text.encode(), limit) is expected


def test_many_shallow_brackets_take_the_token_scan_and_pass() -> None:
    # 40 sibling arrays: more opening brackets than the limit, depth 2.
    shallow = json.dumps({"a": [[i] for i in range(40)]})
    assert not exceeds_depth(shallow.encode(), 32)
    assert loads(shallow.encode()) == {"a": [[i] for i in range(40)]}


def test_brackets_inside_strings_do_not_count_on_the_scan() -> None:
    quoted = json.dumps({"s": "[" * 100})
    assert not exceeds_depth(quoted, 32)


def test_a_deep_document_is_refused_before_parsing() -> None:
    deep = b"[" * 33 + b"]" * 33
    with pytest.raises(JsonRefused) as refused:
        loads(deep)
    assert refused.value.reason == "too-deep"
    assert loads(b"[" * 32 + b"]" * 32) is not None
