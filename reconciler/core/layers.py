"""Fleet defaults and templates: the keys a site gets from `sites.d/_defaults.toml` and from
`templates/<name>.toml` (its `template = "<name>"`), under its own, and where each came from.

The effective site is the defaults, then the template, then the site's own keys: a later file's
key replaces an earlier one's whole. Per top-level key, tables too: a site's `[health]` replaces
the template's `[health]` entirely, never key by key, so what a site file says about a table is
all there is of it (reading one file tells the whole check; no half-inherited `[health]` whose
`url` comes from one file and `contains` from another). Keys that are alternatives replace each
other as a group: a site's `tag` drops the template's `branch`, its `servers` the defaults'
`server`.

One level only: a template cannot name a template, and `_defaults.toml` cannot either, so the
chain is always at most three files and `reconciler show` explains it in one line per key. A
template or the defaults may not set `domain` (it is the file name of one site) or `pin` (a
release of one site on its servers). An error in a layer file is reported at that file's line,
for every site that uses it; sites that do not use it are unaffected. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULTS_NAME = "_defaults.toml"  # in sites.d/: not a site (a domain never starts with '_')
TEMPLATES_DIR = "templates"
# Keys only a site's own file may set.
SITE_ONLY = ("domain", "pin", "template")
# Alternatives: a file that sets one of a group replaces every key of the group.
GROUPS = (frozenset({"server", "servers"}), frozenset({"branch", "tag", "commit"}))
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

Lines = dict[tuple[str, ...], int]  # a key's path (("health", "retries")) -> the line it is set on


def line_of(lines: Lines, path: Iterable[str]) -> int:
    """The line of the key at `path`, else of its nearest parent that has one (a key inside an
    inline table is on its table's line), else 1."""
    parts = tuple(path)
    for n in range(len(parts), 0, -1):
        if (found := lines.get(parts[:n])) is not None:
            return found
    return 1


def check_template_name(name: str) -> str | None:
    """Why `name` cannot name a file templates/<name>.toml, or None."""
    if not _TEMPLATE_NAME.fullmatch(name):
        return "must be 1-64 of [a-z0-9_-], starting with a letter or digit"
    return None


def template_file(name: str) -> str:
    return f"{TEMPLATES_DIR}/{name}.toml"


@dataclass(frozen=True)
class Origin:
    """Where an effective key was set: a file of the declarations repository and its line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Source:
    """One file read as TOML: its top-level values and the line of each key, or (`errors`) why
    it could not be read (`file:line: key: message`)."""

    file: str
    values: Mapping[str, Any] = field(default_factory=dict)
    lines: Lines = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    def line(self, path: Iterable[str]) -> int:
        return line_of(self.lines, path)


@dataclass(frozen=True)
class Layers:
    """The files a site may take keys from, as of one commit (or one directory)."""

    defaults: Source | None = None
    templates: Mapping[str, Source] = field(default_factory=dict)


NO_LAYERS = Layers()


@dataclass
class Effective:
    """A site's keys after layering, each key's origin, and the errors found on the way."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)  # by file: for the line of a nested key
    template: str | None = None  # the template the site names (whether or not it exists)

    def line(self, path: list[str]) -> tuple[str, int] | None:
        """(file, line) of the key at `path` of the effective site, None when no file set it."""
        origin = self.origins.get(path[0]) if path else None
        if origin is None:
            return None
        return origin.file, self.sources[origin.file].line(path)


def _chain(site: Source, layers: Layers, result: Effective) -> list[Source]:
    chain = [layers.defaults] if layers.defaults is not None else []
    name = site.values.get("template")
    errors = result.errors
    if name is not None:
        result.template = name if isinstance(name, str) else None
        where = f"{site.file}:{site.line(['template'])}: template"
        if not isinstance(name, str):
            errors.append(f"{where}: must be a string")
        elif problem := check_template_name(name):
            errors.append(f"{where}: {problem}")
        elif (template := layers.templates.get(name)) is None:
            errors.append(f"{where}: no template {name!r}: {template_file(name)} does not exist")
        else:
            chain.append(template)
    return [*chain, site]


def merge(site: Source, layers: Layers = NO_LAYERS) -> Effective:
    """The effective keys of `site` (already read without errors) over its defaults and template."""
    result = Effective()
    for source in _chain(site, layers, result):
        result.sources[source.file] = source
        if source.errors:
            result.errors.extend(source.errors)
            continue
        # An earlier file's alternatives give way to this file's (its own `server` and
        # `servers` together stay, and are reported as the one file's mistake).
        for group in GROUPS:
            if group & source.values.keys():
                for other in group:
                    result.values.pop(other, None)
                    result.origins.pop(other, None)
        for key, value in source.values.items():
            if source is not site and key in SITE_ONLY:
                what = "the defaults" if source is layers.defaults else "a template"
                result.errors.append(f"{source.file}:{source.line([key])}: {key}: not allowed in {what}: "
                                     "only a site's own file may set it")
                continue
            result.values[key] = value
            result.origins[key] = Origin(source.file, source.line([key]))
    return result


def explain(old: Mapping[str, Any], new: Mapping[str, Any], origins: Mapping[str, Origin]) -> list[str]:
    """Why a site's effective declaration `new` differs from `old` (what its live release was
    asked for with), one line per changed key, named by the file that sets it now: a template's
    change says which template, the defaults' say so."""
    reasons = []
    for key in [*new, *(key for key in old if key not in new)]:
        if old.get(key) == new.get(key):
            continue
        origin = origins.get(key)
        if key == "template":
            reasons.append(f"template: {old.get(key) or 'none'} -> {new.get(key) or 'none'}")
        elif origin is None:
            reasons.append(f"{key} changed (now the default)")
        elif origin.file.startswith(f"{TEMPLATES_DIR}/"):
            name = origin.file.removeprefix(f"{TEMPLATES_DIR}/").removesuffix(".toml")
            reasons.append(f"template {name} changed: {key} ({origin})")
        elif origin.file.endswith(f"/{DEFAULTS_NAME}"):
            reasons.append(f"defaults changed: {key} ({origin})")
        else:
            reasons.append(f"{key} changed ({origin})")
    return reasons
