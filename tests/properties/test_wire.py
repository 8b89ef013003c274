"""core.wire: the bounded JSON decoder and the field validators are total and strict."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.core import wire
from reconciler.remote.protocol import site_steps
from tests.properties.strategies import FAST, nasty_text

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@FAST
@given(st.one_of(nasty_text, st.text()))
def test_decoder_returns_an_object_or_says_why(text: str) -> None:
    try:
        data = wire.decode_json_object(text)
    except wire.WireError as exc:
        assert str(exc)
    else:
        assert isinstance(data, dict)


@FAST
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_decoder_reads_what_json_writes_within_the_limits(value: dict[str, Any]) -> None:
    text = json.dumps(value)
    if depth(value) > wire.MAX_JSON_DEPTH or len(text.encode()) > wire.MAX_JSON_BYTES:
        with pytest.raises(wire.WireLimit):
            wire.decode_json_object(text)
    else:
        assert wire.decode_json_object(text) == value


@FAST
@given(st.integers(min_value=1, max_value=300_000), st.sampled_from(["[", "{", '{"a":', "[[{"]))
def test_bombs_are_refused_before_json_loads(count: int, unit: str) -> None:
    text = unit * count
    with pytest.raises(wire.WireError):  # too large, too deep, or just not closed: never RecursionError
        wire.decode_json_object(text)


@pytest.mark.parametrize("text", ["[" * 200_000, "[" * 60_000, "{" * 33 + "}" * 33])
def test_deep_and_unclosed_nesting_bombs_are_refused_over_the_limit(text: str) -> None:
    with pytest.raises(wire.WireLimit):
        wire.decode_json_object(text)


def test_nesting_inside_strings_does_not_count() -> None:
    text = json.dumps({"message": "[" * 1000 + "\\\"{{{"})
    assert wire.decode_json_object(text)["message"].startswith("[[[")


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', "1" * 5000])
def test_non_numbers_and_digit_bombs_are_refused(text: str) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_json_object(text)


@FAST
@given(nasty_text, st.integers(min_value=0, max_value=2**64))
def test_parse_uint_takes_ascii_digits_only(text: str, maximum: int) -> None:
    number = wire.parse_uint(text, maximum)
    if number is not None:
        assert text.isascii() and text.isdigit() and number == int(text) and 0 <= number <= maximum


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "\uff11", "1\u00b2", "-1", "+1", " 1", "1\n", "", "1" * 21])
def test_parse_uint_refuses_what_python_calls_digits(text: str) -> None:
    assert wire.parse_uint(text, 10**30) is None


@FAST
@given(json_values)
def test_numeric_validators_never_raise(value: Any) -> None:
    number = wire.as_int(value, 1, 2**22)
    assert number is None or (type(number) is int and 1 <= number <= 2**22)
    real = wire.as_float(value, 0.0, 2.0**53)
    assert real is None or (math.isfinite(real) and 0.0 <= real <= 2.0**53)


@pytest.mark.parametrize("value", [2**70, 10**400, -1, 0, True, 1.5, "1", None, float("nan"), float("inf")])
def test_pid_like_integers(value: Any) -> None:
    assert wire.as_int(value, 1, 2**22) is None
    assert wire.as_float(10**400, 0.0, 1e12) is None  # compared, never converted (OverflowError)


@FAST
@given(st.one_of(nasty_text, st.text(alphabet="0123456789abcdefABCDEF", min_size=38, max_size=66)))
def test_sha_is_exactly_hex(text: str) -> None:
    sha = wire.as_sha(text)
    if sha is not None:
        assert len(sha) in (40, 64) and set(sha) <= set("0123456789abcdef")


@FAST
@given(nasty_text)
def test_display_escapes_everything_a_terminal_would_act_on(text: str) -> None:
    shown = wire.display(text)
    assert all(ch.isprintable() for ch in shown)
    assert len(shown) <= 10 * wire.MAX_TEXT + 3


@FAST
@given(json_values)
def test_nesting_is_the_depth_json_has(value: Any) -> None:
    assert wire.nesting(json.dumps(value)) == depth(value)


@FAST
@given(nasty_text)
# Found by CI: escapes of astral characters made the shown text ten times the bound (wire.display
# bounded its input, not what it printed).
@example("\x000\x1b\x1b\x08" + "0" * 13 + ("\x1b\U000114da\U00018cd6\U00018cd6\U00018d09\U00018d09" + "0" * 8) * 3
         + "\x00")
def test_commit_info_is_total_bounded_and_printable(text: str) -> None:
    """An app repository's author and subject: any output gives a CommitInfo, each field one
    printable line of bounded length (a hostile subject cannot forge history or drive a terminal)."""
    info = site_steps.commit_info(text)
    for value in (info.author, info.subject):
        assert len(value) <= wire.MAX_COMMIT_TEXT + 3
        assert "\n" not in value and "\x1b" not in value and "\0" not in value


@FAST
@given(st.text(max_size=300), st.text(max_size=300))
def test_commit_info_reads_what_git_log_prints(author: str, subject: str) -> None:
    info = site_steps.commit_info(f"{author}\0{subject}\0")
    if "\0" not in author + subject:
        assert info.subject == wire.display(" ".join(subject.split()), wire.MAX_COMMIT_TEXT)
        assert info.author == wire.display(" ".join(author.split()), wire.MAX_COMMIT_TEXT)
