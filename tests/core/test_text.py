"""reconciler.core.text: text from repositories and servers cannot forge a line or drive a terminal.
`printable` escapes every control and unprintable character and leaves printable text (any script)
as it is; `printable_lines` keeps the newlines and tabs that lay a log out and escapes the rest.
(That only newline and tab survive, for any text: tests/properties/test_printable_lines.py.)"""

from __future__ import annotations

import pytest

from reconciler.core.text import printable, printable_lines


@pytest.mark.parametrize("text", ["shop.example.com", "café ☕ 日本語", "", "a b"])
def test_printable_text_is_returned_unchanged(text: str) -> None:
    assert printable(text) == text


@pytest.mark.parametrize(("text", "shown"), [
    ("a\nb", "a\\nb"),
    ("\x1b[2J", "\\x1b[2J"),
    ("bell\x07", "bell\\x07"),
    ("\r\t", "\\r\\t"),
    ("\x9b", "\\x9b"),          # a C1 control (CSI)
    ("\u202e", "\\u202e"),      # right-to-left override
    ("\udcff", "\\udcff"),      # an undecodable byte, as surrogateescape keeps it
])
def test_printable_escapes_what_would_act_on_a_terminal(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_lines_keeps_the_layout_and_escapes_everything_else() -> None:
    log = "step 1\tok\n\x1b]52;c;Y2xpcA==\x07copied\rover\nend\n"
    assert printable_lines(log) == "step 1\tok\n\\x1b]52;c;Y2xpcA==\\x07copied\\rover\nend\n"


def test_printable_lines_ends_crlf_lines_without_showing_the_cr() -> None:
    assert printable_lines("Installing\r\nDone\r\n") == "Installing\nDone\n"
    assert printable_lines("50%\r100%\r\n") == "50%\\r100%\n", "a CR inside a line still shows"
