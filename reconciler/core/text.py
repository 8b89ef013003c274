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


def printable_lines(text: str) -> str:
    """Many lines (a build's output) for a terminal: `printable` between the newlines and tabs
    that lay them out, so every other control character shows as its escape: the ESC of CSI/OSC
    sequences (screen clears, window titles, OSC 52 clipboard writes) as `\\x1b`, BEL, CR, the
    C1 controls. A CR that ends a line (CRLF output: Windows tools, composer, curl) is that
    line's end, not shown; any other CR is. Line by line, so a long log that is mostly plain
    takes `printable`'s fast path."""
    return "\n".join("\t".join(map(printable, line.removesuffix("\r").split("\t"))) for line in text.split("\n"))
