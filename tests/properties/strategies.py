"""Hypothesis strategies for hostile server data: text full of the characters that used to
split, forge or crash things (line separators, NUL, record tags, brackets, odd digits)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

# Modest: the whole folder runs in seconds on two cores.
FAST = settings(max_examples=200, deadline=None)

NASTY = [
    "\n", "\r", "\0", "\t", " ", "\u2028", "\u2029", "\u0085", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c",
    "\u3000", "\x1b[2J", "\x1b]0;x\x07", "\ufffd", "\ud800", "@site ", "@site a.example.com", "@link ",
    "@release 01012020-000000", "@manifest ", "@heads 0 0 ", "@end", "@lock ", "|", "[", "]", "{", "}",
    '"', "\\", "\u00b2", "\u0663", "refs/heads/main", "deployments/a.example.com/", "01012020-000000",
    "a" * 40, "f" * 64, "NaN", "1e400", "9" * 30,
]

nasty_text = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(NASTY)), max_size=25).map("".join)


def shell_value(text: str) -> str:
    """What a shell variable can hold of `text`: no NUL (dash, bash, ash: C strings)."""
    return text.replace("\0", "")


def first_line(text: str) -> str:
    """What `IFS= read -r` keeps of a file: the first line, no NUL."""
    return shell_value(text).split("\n", 1)[0]
