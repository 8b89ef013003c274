"""The shell seam: the one place that turns values into POSIX sh text.

Every value that reaches a remote shell is quoted here; nothing else in the package
assembles shell text from values.
"""

from __future__ import annotations

import shlex


def quote(value: str) -> str:
    """Quote one value for a POSIX shell. Every non-code value goes through here."""
    return shlex.quote(value)
