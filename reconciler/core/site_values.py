"""The rules one value of a site file must follow, each alone: a domain (the file's name), a
server (`local`, or an SSH destination the transport can use), a branch or tag name, and the path
entries of `shared` and `copy_from_previous`. Pure. Each `check_*` answers why a value is refused,
or None; the model (`core/declarations.py`) applies them in context, and the importer of an
existing fleet (`remote/protocol/importing.py`) checks what a server reports with the same rules.
"""

from __future__ import annotations

import ipaddress
import re

MAX_SHARED = 256

_DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
# Every pattern below is used with fullmatch: `$` would let a trailing newline through.
# `[user@]host[:port]`: the shape only (ASCII by construction); check_server checks the parts.
_SERVER_RE = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?:(?P<host>[A-Za-z0-9._][A-Za-z0-9._-]*)|\[(?P<ip6>[0-9A-Fa-f:.]+)\])"
    r"(?::(?P<port>[0-9]+))?"
)
MAX_USER = 64    # longer than any login name; the rest is a typo or an attack
MAX_HOST = 253   # DNS: the whole name
MAX_LABEL = 63   # DNS: one label; idna (hence asyncssh/socket) raises UnicodeError above it
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# The one spelling of a site on the reconciler's own host (exact: "Local" is an SSH host alias).
LOCAL_SERVER = "local"
# Why a local site is refused unless the configuration opts in (`Settings.allow_local`).
LOCAL_REFUSED = (f'server = "{LOCAL_SERVER}" runs this site\'s script as the reconciler user on this host; '
                 "set allow_local = true in reconciler.toml to allow it")


def check_domain(domain: str) -> str | None:
    """Why a domain is not a lower-case DNS name, or None when it is one."""
    if len(domain) > 253:
        return "longer than 253 characters"
    labels = domain.split(".")
    if len(labels) < 2:
        return "must contain at least one dot"
    for label in labels:
        if not label or len(label) > 63 or not _DOMAIN_LABEL.fullmatch(label):
            return f"label {label!r} is not [a-z0-9-] without leading/trailing '-'"
    return None


def check_server(server: str) -> str | None:
    """Why `server` is neither "local" nor an SSH destination the transport can use, or None.

    Everything that passes reaches asyncssh/socket without an exception other than a
    connection error: ports 1-65535 (OverflowError above), labels of 1-63 characters
    (idna's UnicodeError for an empty or longer one), IPv6 only in brackets and parseable.
    A bare host is also an ssh_config Host alias (`web-1`), so hosts need no dot.
    """
    if server == LOCAL_SERVER:
        return None
    match = _SERVER_RE.fullmatch(server)
    if not match:
        return '"local", [user@]host[:port] or an ssh_config Host alias, with no option-like leading "-"'
    user, host, ip6, port = match.group("user", "host", "ip6", "port")
    if user is not None and len(user) > MAX_USER:
        return f"user is longer than {MAX_USER} characters"
    if port is not None and (port.startswith("0") or int(port) > 65535):
        return f"port {port} is not 1-65535 (without leading zeros)"
    if ip6 is not None:
        try:
            ipaddress.IPv6Address(ip6)
        except ValueError:
            return f"[{ip6}] is not an IPv6 address"
        return None
    if len(host) > MAX_HOST:
        return f"host is longer than {MAX_HOST} characters"
    for label in host.split("."):
        if not label:
            return f"host {host!r} has an empty label (a leading, trailing or doubled '.')"
        if len(label) > MAX_LABEL:
            return f"host label {label[:16]!r}... is longer than {MAX_LABEL} characters"
    try:
        host.encode("idna")
    except UnicodeError as exc:  # not reachable after the checks above; kept as the transport's own test
        return f"host {host!r} is not a valid host name ({exc})"
    return None


def check_branch(name: str, what: str = "branch") -> str | None:
    """`git check-ref-format --branch` rules, plus: never an option. Tag names are held to the
    same rules (`what` = "tag" only changes the wording)."""
    if not name:
        return "is empty"
    if name == "HEAD":
        return f"'HEAD' is not a valid {what} name"
    if name.startswith("-"):
        return "must not start with '-'"
    if _CONTROL.search(name) or re.search(r"[ ~^:?*\[\\]", name):
        return f"contains a character git forbids in {what} names"
    if ".." in name or "@{" in name or name == "@" or "//" in name:
        return f"contains a sequence git forbids in {what} names ('..', '@{{', '//')"
    if name.endswith(("/", ".")) or name.startswith("/"):
        return "must not start with '/' or end with '/' or '.'"
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return "a component starts with '.' or ends with '.lock'"
    return None


def check_entries(value: list[str]) -> list[str]:
    """`shared` and `copy_from_previous` entries: non-empty relative paths inside the release
    (no '..', '.', '//', no leading '/' or '-'), none twice, none inside another."""
    if len(value) > MAX_SHARED:
        raise ValueError(f"more than {MAX_SHARED} entries")
    seen: set[str] = set()
    for entry in value:
        parts = entry.split("/")
        if not entry or entry.startswith("/") or _CONTROL.search(entry):
            raise ValueError(f"entry {entry!r} must be a non-empty relative path")
        if any(part in ("", ".", "..") for part in parts) or entry.startswith("-"):
            raise ValueError(f"entry {entry!r} must not contain '..', '.', '//' or start with '-'")
        if entry in seen:
            raise ValueError(f"entry {entry!r} is listed twice")
        seen.add(entry)
    for entry in value:
        if prefix := inside_entry(entry, seen):
            raise ValueError(f"entries {prefix!r} and {entry!r} overlap")
    return value


def inside_entry(entry: str, others: set[str]) -> str | None:
    """The entry of `others` that `entry` lies strictly inside, or None."""
    parts = entry.split("/")
    for depth in range(1, len(parts)):
        if (prefix := "/".join(parts[:depth])) in others:
            return prefix
    return None


def holding_entry(entry: str, others: set[str]) -> str | None:
    """The entry of `others` that lies strictly inside `entry`, or None."""
    return next((other for other in sorted(others) if other.startswith(entry + "/")), None)
