"""`reconciler show D [--json]`: a site's effective declaration (its file over the fleet's
`_defaults.toml` and its template, core.layers) as the daemon applies it, each key with the file
and line that set it, or "default" when no file did. An invalid site: its errors, exit 1."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import tomlkit

from reconciler.cli.applied import applied
from reconciler.cli.invocation import Invocation
from reconciler.core.declarations import SiteDeclaration
from reconciler.core.layers import Origin
from reconciler.core.text import printable

DEFAULT = "default"


def effective(site: SiteDeclaration, origins: dict[str, Origin]) -> list[tuple[str, Any, Origin | None]]:
    """(key, value, origin) of every key the site has, in the model's order; a key no file set
    and whose value is None (no php, no pin) is left out. `server` is left out when `servers`
    gave it (it is only the first of them)."""
    values = site.model_dump(exclude_none=True)
    rows = []
    for key in SiteDeclaration.model_fields:
        if key not in values or (key == "server" and site.servers is not None):
            continue
        rows.append((key, values[key], origins.get(key) if key != "domain" else None))
    return rows


def as_toml(rows: list[tuple[str, Any, Origin | None]]) -> str:
    document = tomlkit.document()
    tables = []
    for key, value, origin in rows:
        note = f"from {origin}" if origin is not None else DEFAULT
        if key == "domain":
            note = "the file name"
        if isinstance(value, dict):
            table = tomlkit.table()
            for name, inner in value.items():
                table.add(name, inner)
            table.comment(note)
            tables.append((key, table))
            continue
        multiline = isinstance(value, str) and "\n" in value
        item = tomlkit.string(value, multiline=True) if multiline else tomlkit.item(value)
        item.comment(note)
        document.add(key, item)
    for key, table in tables:  # after every plain key: TOML's rule
        document.add(key, table)
    return document.as_string()


def as_json(domain: str, commit: str | None, rows: list[tuple[str, Any, Origin | None]]) -> str:
    return json.dumps({
        "domain": domain, "commit": commit,
        "declaration": {key: value for key, value, _ in rows},
        "origins": {key: ({"file": origin.file, "line": origin.line} if origin is not None else None)
                    for key, _, origin in rows if key != "domain"},
    }, indent=2)


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    decls = applied(invocation)
    site = decls.sites.get(args.domain)
    if site is None:
        invalid = decls.invalid.get(args.domain)
        if invalid is None:
            print(f"reconciler: {printable(args.domain)}: no such site declared", file=sys.stderr)
            return 1
        print(f"{invalid.domain}: Invalid", file=sys.stderr)
        for line in invalid.errors:
            print(line, file=sys.stderr)
        return 1
    rows = effective(site, decls.origins.get(args.domain, {}))
    if args.json:
        print(as_json(site.domain, decls.commit, rows))
    else:
        print(f"# {site.domain}: the effective declaration at {(decls.commit or 'the work tree')[:12]}")
        print(as_toml(rows), end="")
    return 0
