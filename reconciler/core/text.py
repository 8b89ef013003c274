"""Text from repositories and servers made safe for messages and terminals.

Its own module (no pydantic, no regexes) because every printing command needs it, including
the look-only ones that must start fast.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """Names and keys from a file go into messages and terminals: escape control characters
    and undecodable bytes so they can neither forge lines nor drive the terminal."""
    if text.isprintable():  # most text is: no Python loop over it
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)
