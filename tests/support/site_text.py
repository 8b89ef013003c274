"""Site declaration text for table-driven tests: one `key = value` line per field (so line numbers
are predictable), parsed as `sites.d/<domain>.toml`, and the `file:line: key: message` errors read
back independently of the parser."""

from __future__ import annotations

import re
from typing import Any

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import InvalidSite, SiteDeclaration
from tests.support.repos import toml_value

DOMAIN = "shop.example.com"
FILE = f"sites.d/{DOMAIN}.toml"
BASE = {"server": "local", "repository": "/srv/git/shop.git"}
ERROR_RE = re.compile(
    r"^(?P<file>sites\.d/[^:]+\.toml):(?P<line>[0-9]+): (?P<key>[A-Za-z_][A-Za-z0-9_]*): (?P<msg>.+)$", re.DOTALL
)


def toml(value: Any) -> str:
    """A TOML value on one line; strings as basic strings with every control character escaped."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return toml_value(value)


def render(fields: dict[str, Any]) -> str:
    """One `key = value` line per field, in order (so line numbers are predictable)."""
    return "".join(f"{key} = {toml(value)}\n" for key, value in fields.items())


def parse(text: str, domain: str = DOMAIN) -> SiteDeclaration | InvalidSite:
    return parse_site(f"sites.d/{domain}.toml", text.encode())


def parse_fields(domain: str = DOMAIN, **overrides: Any) -> SiteDeclaration | InvalidSite:
    return parse(render({**BASE, **overrides}), domain)


def line_of(text: str, key: str) -> int:
    """The 1-based line where `key = ` starts, computed independently of the module."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(f"{key} ="):
            return number
    raise AssertionError(f"{key} not in {text!r}")


def errors_of(result: SiteDeclaration | InvalidSite) -> list[re.Match[str]]:
    assert isinstance(result, InvalidSite), f"expected invalid, got {result!r}"
    assert result.errors, "an invalid site carries at least one error"
    matches = []
    for error in result.errors:
        match = ERROR_RE.match(error)
        assert match, f"not 'sites.d/<file>:LINE: key: message': {error!r}"
        matches.append(match)
    return matches


def assert_invalid(result: SiteDeclaration | InvalidSite, key: str, line: int, fragment: str = "") -> None:
    matches = errors_of(result)
    found = [m for m in matches if m["key"] == key]
    assert found, f"no error for {key!r} in {result.errors!r}"  # type: ignore[union-attr]
    assert found[0]["file"] == FILE or found[0]["file"].startswith("sites.d/")
    assert int(found[0]["line"]) == line, result.errors  # type: ignore[union-attr]
    assert fragment.lower() in found[0]["msg"].lower(), result.errors  # type: ignore[union-attr]
