"""A site's environment (`shared/.env`) as desired state: its plaintext held where nothing prints
it, its digest (what the probe compares), the dotenv lines `env keys` and `env set` read and
edit, and the recipients file's lines. Pure: no I/O. Encryption is `engine/sealed.py`'s.

The plaintext is a secret: `SiteEnv`'s repr and str show the digest only, so a log line, an
exception or a test failure that prints the object never prints the content.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

ENV_SUFFIX = ".env.age"
RECIPIENTS_FILE = ".reconciler/recipients"
ENV_CHANGES = ("reload", "redeploy")
MAX_ENV_BYTES = 256 * 1024  # a .env is a few KiB; more is a mistake, and it travels on stdin

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LINE_KEY_RE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_RECIPIENT_RE = re.compile(r"age1[0-9a-z]{58}")


def digest_of(text: str) -> str:
    """sha256 of the file's bytes, as `sha256sum` prints it on the server."""
    return hashlib.sha256(text.encode()).hexdigest()


# An empty shared/.env is the layout's placeholder (a shared file entry is created empty), not drift.
EMPTY_DIGEST = digest_of("")


@dataclass(frozen=True)
class SiteEnv:
    """The decrypted content of `sites.d/<domain>.env.age`. Never printed: see the module text."""

    text: str = field(repr=False)
    digest: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", digest_of(self.text))

    def __str__(self) -> str:
        return f"env sha256:{self.digest[:12]}"


def env_file(domain: str) -> str:
    """The repository path of a site's encrypted environment."""
    return f"sites.d/{domain}{ENV_SUFFIX}"


def domain_of_env(name: str) -> str | None:
    """`shop.example.com` for `shop.example.com.env.age` (a file name in sites.d/), else None."""
    return name[: -len(ENV_SUFFIX)] if name.endswith(ENV_SUFFIX) and len(name) > len(ENV_SUFFIX) else None


def check_text(text: str) -> str | None:
    """Why decrypted content cannot be a site's .env (it travels as text on stdin), or None."""
    if len(text.encode()) > MAX_ENV_BYTES:
        return f"is larger than {MAX_ENV_BYTES} bytes"
    if "\x00" in text:
        return "contains a NUL byte"
    return None


def keys(text: str) -> list[str]:
    """The variable names a dotenv text sets, in order, once each (never their values)."""
    found: list[str] = []
    for line in text.splitlines():
        match = _LINE_KEY_RE.match(line)
        if match and not line.lstrip().startswith("#") and match.group(1) not in found:
            found.append(match.group(1))
    return found


def check_key(key: str) -> str | None:
    return None if _KEY_RE.fullmatch(key) else "must be a variable name: letters, digits, _ and ., not first a digit"


def set_value(text: str, key: str, value: str) -> str:
    """`text` with `key` set to `value`: its (last) line replaced in place, else appended. The
    value is written as given; one with spaces or `#` is double-quoted, as Laravel's dotenv reads it."""
    if problem := check_key(key):
        raise ValueError(f"{key!r} {problem}")
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"the value of {key} must be one line")
    if re.search(r"[\s#\"'\\$]", value):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'
    line = f"{key}={value}"
    lines = text.splitlines()
    at = [i for i, old in enumerate(lines) if (m := _LINE_KEY_RE.match(old)) and m.group(1) == key
          and not old.lstrip().startswith("#")]
    if at:
        lines[at[-1]] = line
    else:
        lines.append(line)
    return "\n".join(lines) + "\n"


def parse_recipients(text: str) -> list[str]:
    """The age public keys of a recipients file: one a line, `#` comments and blank lines
    ignored. A line that is no X25519 age recipient is an error (a typo would silently drop a
    teammate)."""
    found: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _RECIPIENT_RE.fullmatch(line):
            raise ValueError(f"{RECIPIENTS_FILE}:{number}: not an age public key (age1...)")
        if line not in found:
            found.append(line)
    if not found:
        raise ValueError(f"{RECIPIENTS_FILE} names no recipient")
    return found


def parse_digest(value: str) -> str | None:
    """The probe's `@env` value: a sha256 (64 lower-case hex digits), or "-" for no file (None).
    Anything else raises ValueError: it is none of ours."""
    if value == "-":
        return None
    if _DIGEST_RE.fullmatch(value):
        return value
    raise ValueError("not a sha256 digest")
