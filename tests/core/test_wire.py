"""reconciler.core.wire: exact edges of the one reader of server data. Sizes are UTF-8 bytes, not
characters; a caller's own bounds are honoured; a stray closing bracket never hides the nesting
after it; what is not an object is named; numbers and strings come back only within their bounds
and as the type asked for; a displayed string is cut at its limit, escapes included. (That every
input is decoded or refused, never raising anything else: tests/properties/test_wire.py.)"""

from __future__ import annotations

import sys

import pytest

from reconciler.core import wire


def test_the_size_limit_counts_utf8_bytes_exactly() -> None:
    at_limit = '{"a":"' + "é" * 7 + '"}'  # 15 characters, 22 bytes
    assert wire.decode_json_object(at_limit, max_bytes=22) == {"a": "é" * 7}
    with pytest.raises(wire.WireLimit, match=r"larger than 21 bytes \(22\)"):
        wire.decode_json_object(at_limit, max_bytes=21)


def test_the_depth_limit_is_the_callers() -> None:
    three = '{"a":[{"b":1}]}'
    assert wire.decode_json_object(three, max_depth=3) == {"a": [{"b": 1}]}
    with pytest.raises(wire.WireLimit, match="nesting deeper than 2"):
        wire.decode_json_object(three, max_depth=2)


def test_a_stray_closer_never_hides_the_nesting_after_it() -> None:
    assert wire.nesting("]]]]" + "[" * 5) == 5
    assert wire.nesting('"[[[" [[ ]] \\"') == 2  # brackets in a string do not count, an escaped quote is in it


@pytest.mark.parametrize(("text", "named"), [("[]", "list"), ('"x"', "str"), ("1", "int"), ("null", "NoneType")])
def test_json_that_is_not_an_object_is_refused_naming_what_it_is(text: str, named: str) -> None:
    with pytest.raises(wire.WireError, match=f"not a JSON object but {named}$"):
        wire.decode_json_object(text)


def test_numbers_come_back_within_bounds_as_the_type_asked_for() -> None:
    assert wire.as_int(5, 1, 5) == 5 and wire.as_int(6, 1, 5) is None and wire.as_int(5.0, 1, 5) is None
    real = wire.as_float(3, 0.0, 5.0)
    assert real == 3.0 and type(real) is float
    assert wire.as_float(2**2000, 0.0, sys.float_info.max) is None  # compared exactly, never converted first
    assert wire.as_float(2**2000, 0.0, float("inf")) is None  # beyond any float: no OverflowError either
    assert wire.as_float(-0.5, 0.0, 1.0) is None and wire.as_float(False, 0.0, 1.0) is None


def test_strings_and_shas_are_taken_only_as_they_are() -> None:
    assert wire.as_str("abc", 3) == "abc" and wire.as_str("abcd", 3) is None and wire.as_str(3) is None
    assert wire.as_sha("f" * 40) == "f" * 40 and wire.as_sha("f" * 64) == "f" * 64
    assert wire.as_sha("f" * 41) is None and wire.as_sha("F" * 40) is None and wire.as_sha(None) is None
    assert wire.parse_uint("42", 42) == 42 and wire.parse_uint("43", 42) is None


def test_display_cuts_at_its_limit_counting_escapes() -> None:
    assert wire.display("abcdef", 6) == "abcdef"
    assert wire.display("abcdefg", 6) == "abcdef..."
    assert wire.display("\x1b" * 3, 6) == "\\x1b\\x..."  # three characters, but twelve once escaped
    assert wire.display("a\nb") == "a\\nb"
