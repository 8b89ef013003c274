"""core.text.printable_lines (what `reconciler logs` shows): whatever a build printed, nothing in
it but newline and tab is a character a terminal acts on, and the lines stay the lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.text import printable, printable_lines
from tests.properties.strategies import FAST, nasty_text


@FAST
@given(st.one_of(nasty_text, st.text()))
def test_only_newline_and_tab_are_left_unescaped(text: str) -> None:
    shown = printable_lines(text)
    assert all(ch.isprintable() or ch in "\n\t" for ch in shown), repr(shown)
    assert shown.split("\n") == [printable_lines(line) for line in text.split("\n")]
    assert shown.count("\t") == text.count("\t")
    if text.isprintable():
        assert shown == text == printable(text)
