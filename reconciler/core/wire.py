"""Reading data that comes from a server: one strict, bounded reader for every field.

Everything here is pure (no I/O) and total: a validator returns a value or None, the JSON
decoder returns a dict or raises `WireError`, nothing else ever escapes. Server data is
untrusted (anyone with the deploy user's shell, or an app repository's pusher, can shape it), so:

- JSON is bounded BEFORE `json.loads` sees it: size (`MAX_JSON_BYTES`) and bracket nesting
  (`MAX_JSON_DEPTH`), so a `[` bomb is a message, never a RecursionError. Only objects are
  accepted, `NaN`/`Infinity` are refused, and numbers come back as Python numbers only when
  a field validator says they are in range.
- Integers are ASCII digits only (`"²".isdigit()` is True in Python, `int("٣")` is 3).
- A sha is `[0-9a-f]{40}` (SHA-1) or `[0-9a-f]{64}` (SHA-256), ASCII, nothing around it.
- Strings that end up in messages go through `printable` (the escaping declarations use),
  so a server cannot drive the operator's terminal or forge a line of output.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from reconciler.core.text import printable

MAX_JSON_BYTES = 64 * 1024  # a manifest or a lock owner is a few hundred bytes
MAX_JSON_DEPTH = 32
MAX_TEXT = 512  # characters of one server string quoted in a message

_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_DIGITS_RE = re.compile(r"[0-9]{1,20}")

__all__ = [
    "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "WireError", "WireLimit", "as_float", "as_int", "as_sha",
    "as_str", "decode_json_object", "display", "nesting", "parse_uint", "printable",
]


class WireError(ValueError):
    """Server data that is not what it must be. The message says why, for an operator."""


class WireLimit(WireError):
    """Server data refused unread because it is larger or deeper than anything we write."""


def as_sha(value: object) -> str | None:
    """A full commit id, exactly: 40 or 64 lower-case ASCII hex digits."""
    return value if isinstance(value, str) and _SHA_RE.fullmatch(value) else None


def parse_uint(text: str, maximum: int) -> int | None:
    """A non-negative integer written in ASCII digits only, at most `maximum`."""
    if not _DIGITS_RE.fullmatch(text):
        return None
    number = int(text)
    return number if number <= maximum else None


def as_int(value: object, minimum: int, maximum: int) -> int | None:
    """A JSON integer (not a bool, not a float) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if minimum <= value <= maximum else None


def as_float(value: object, minimum: float, maximum: float) -> float | None:
    """A finite JSON number within [minimum, maximum]; integers of any size are compared,
    never converted first (float(2**2000) would raise OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not minimum <= value <= maximum:
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float, under an unbounded maximum
        return None


def as_str(value: object, limit: int = MAX_JSON_BYTES) -> str | None:
    """A JSON string of at most `limit` characters."""
    return value if isinstance(value, str) and len(value) <= limit else None


def display(text: str, limit: int = MAX_TEXT) -> str:
    """A server string made safe to print: control characters escaped, length bounded: at most
    `limit` characters and "..." as shown, escapes included (an escape is up to ten characters for
    one, so bounding the input alone let a run of astral characters print ten times the limit)."""
    shown = printable(text[:limit + 1])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return shown[:limit] + "..."


def nesting(text: str) -> int:
    """How deep JSON arrays and objects nest, skipping strings; linear, no recursion."""
    depth = deepest = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)  # a stray closer never hides the opener after it
    return deepest


def _refuse_constant(name: str) -> Any:
    raise WireError(f"not JSON: {name} is not a number")


def decode_json_object(text: str, *, max_bytes: int = MAX_JSON_BYTES,
                       max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The JSON object `text` holds. Raises WireLimit when it is too large or too deep to
    read (checked before parsing), WireError when it is not one JSON object."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise WireLimit(f"larger than {max_bytes} bytes ({size})")
    # Fewer brackets than the limit cannot nest deeper than it (a C-speed count first).
    if text.count("[") + text.count("{") > max_depth and nesting(text) > max_depth:
        raise WireLimit(f"nesting deeper than {max_depth}")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except WireError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limits; depth is bounded
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise WireError(f"not JSON: {reason}") from None
    if not isinstance(data, dict):
        raise WireError(f"not a JSON object but {type(data).__name__}")
    return data


MAX_COMMIT_TEXT = 200  # characters of a commit's author or subject kept for history and notifications
