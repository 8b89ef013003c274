"""Declaration files: `sites.d/*.toml` as bytes in, a validated site or the file's errors out.
The one strict parser of what an operator commits (a file too large, nested too deep, not TOML,
or failing the model's validation is that file's `InvalidSite`, with the line of each key); a
site judged over its defaults and template (core.layers), each error at the file and line that
set the key; a commit's files assembled into `Declarations`. Pure: `engine.source` reads the files.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from reconciler.core.declarations import (
    MAX_ERRORS,
    MAX_FILE_BYTES,
    MAX_NESTING,
    SITES_DIR,
    Declarations,
    InvalidSite,
    SiteDeclaration,
)
from reconciler.core.layers import (
    DEFAULTS_NAME,
    NO_LAYERS,
    Effective,
    Layers,
    Lines,
    Origin,
    Source,
    check_template_name,
    merge,
)
from reconciler.core.site_values import LOCAL_SERVER, check_domain
from reconciler.core.text import printable

DEFAULTS_FILE = f"{SITES_DIR}/{DEFAULTS_NAME}"


def _nesting(text: str) -> int:
    """How deep brackets and braces nest, ignoring strings and comments (cheap, linear)."""
    depth = deepest = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
        i += 1
    return deepest


_PART = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_DOTTED = rf"{_PART}(?:[ \t]*\.[ \t]*{_PART})*"
_TABLE_LINE = re.compile(rf"^[ \t]*\[\[?[ \t]*({_DOTTED})[ \t]*\]")
_KEY_LINE = re.compile(rf"^[ \t]*({_DOTTED})[ \t]*=")
_PARTS = re.compile(_PART)

def _parts(dotted: str) -> tuple[str, ...] | None:
    parts = []
    for token in _PARTS.findall(dotted):
        if token[0] == '"':
            try:
                token = tomllib.loads(f"k = {token}")["k"]
            except tomllib.TOMLDecodeError:
                return None
        elif token[0] == "'":
            token = token[1:-1]
        parts.append(token)
    return tuple(parts)


def _key_lines(text: str) -> Lines:
    """The first line of every key, by its full path: a key inside `[health]` is ("health",
    "retries") at its own line, the table's name at its header's; a dotted key names each of its
    prefixes too. Lines inside a multi-line string are its text, not keys."""
    lines: Lines = {}
    table: tuple[str, ...] = ()
    open_quote = ""
    for number, line in enumerate(text.splitlines(), 1):
        if open_quote:
            if line.count(open_quote) % 2:
                open_quote = ""
            continue
        header = _TABLE_LINE.match(line)
        key = None if header else _KEY_LINE.match(line)
        if header is not None and (parts := _parts(header.group(1))) is not None:
            table = parts
            found = parts
        elif key is not None and (parts := _parts(key.group(1))) is not None:
            found = table + parts
            value = line[key.end():]
            # A value that opens a multi-line string not closed on this line: skip its lines.
            quote = next((q for q in ('"""', "'''") if value.lstrip().startswith(q)), "")
            if quote and value.count(quote) % 2:
                open_quote = quote
        else:
            continue
        for n in range(1, len(found) + 1):
            lines.setdefault(found[:n], number)
    return lines


def _invalid(stem: str, filename: str, errors: list[str], server: str = "") -> InvalidSite:
    unique = list(dict.fromkeys(errors))
    if len(unique) > MAX_ERRORS:
        unique = [*unique[:MAX_ERRORS], f"{filename}: ... and {len(unique) - MAX_ERRORS} more errors"]
    return InvalidSite(stem, filename, tuple(unique), server)


def read_source(filename: str, data: bytes) -> Source:
    """One file's bytes as TOML, with the line of each key, or why it cannot be read (too large,
    not UTF-8, nested too deep, not TOML): a site file or a layer file (core.layers) alike."""
    filename = printable(filename)
    if len(data) > MAX_FILE_BYTES:
        return Source(filename, errors=(f"{filename}:1: file: larger than {MAX_FILE_BYTES} bytes",))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return Source(filename, errors=(f"{filename}:{line}: file: not UTF-8",))
    if _nesting(text) > MAX_NESTING:
        return Source(filename, errors=(f"{filename}:1: file: nested deeper than {MAX_NESTING} levels",))
    # tomllib is quadratic in the parts of a dotted key: refuse absurd ones before parsing.
    for number, row in enumerate(text.splitlines(), 1):
        if (key_part := row.partition("=")[0]).count(".") > MAX_NESTING:
            first = printable(key_part.strip().strip("[").split(".")[0].strip()) or "file"
            message = f"{filename}:{number}: {first}: dotted key deeper than {MAX_NESTING} parts"
            return Source(filename, errors=(message,))
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else max(1, text.count("\n") + (not text.endswith("\n")))
        return Source(filename, errors=(f"{filename}:{line}: file: {printable(str(exc))}",))
    except RecursionError:
        return Source(filename, errors=(f"{filename}:1: file: nested too deeply",))
    return Source(filename, raw, _key_lines(text))


def judge(site: Source, layers: Layers = NO_LAYERS) -> tuple[SiteDeclaration | InvalidSite, Effective]:
    """A site file read (`read_source`) over its defaults and template: the validated effective
    site, or its errors each at the file and line that set the key; and where each key came from."""
    stem = posixpath.basename(site.file).removesuffix(".toml")
    if site.errors:
        return _invalid(stem, site.file, list(site.errors)), Effective()
    effective = merge(site, layers)
    raw = effective.values
    filename = site.file
    server = raw.get("server") if isinstance(raw.get("server"), str) else ""
    errors = effective.errors
    if problem := check_domain(stem):
        errors.insert(0, f"{filename}:1: domain: file name {stem!r} is not a lower-case DNS name: {problem}")
    if "domain" in raw and raw["domain"] != stem:
        errors.append(f"{filename}:{site.line(['domain'])}: domain: must equal the file name {stem!r}")
    try:
        checked = SiteDeclaration.model_validate({**raw, "domain": stem})
    except ValidationError as exc:
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            if key == "domain" and errors:
                continue
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            # A key of a table ([health]) is named in full, at its own line: health.timeout.
            path = [part for part in err["loc"] if isinstance(part, str)]
            name = ".".join(path) or key
            # At the file that set the key (the site's, its template or the defaults).
            where, line = effective.line(path) or (filename, 1)
            errors.append(f"{where}:{line}: {printable(name) or 'file'}: {printable(message)}")
        return _invalid(stem, filename, errors, printable(str(server))), effective
    if errors:
        return _invalid(stem, filename, errors, printable(str(server))), effective
    return checked, effective


def parse_site(filename: str, data: bytes, layers: Layers = NO_LAYERS) -> SiteDeclaration | InvalidSite:
    """Parse and validate one file. `filename` is its path in the repository."""
    return judge(read_source(filename, data), layers)[0]


Parsed = tuple["SiteDeclaration | InvalidSite", int]  # a file's result, and its `server` line when "local"


def parse_file(filename: str, data: bytes | None, layers: Layers = NO_LAYERS) -> Parsed:
    """One file of sites.d/ (None: a symlink, directory or special file, never followed)."""
    return parse_layered(filename, data, layers)[0]


def parse_layered(filename: str, data: bytes | None, layers: Layers = NO_LAYERS) -> tuple[Parsed, Effective]:
    """`parse_file`, and where each of the site's keys came from."""
    if data is None:
        filename = printable(filename)
        stem = posixpath.basename(filename).removesuffix(".toml")
        return (InvalidSite(stem, filename, (f"{filename}:1: file: symlinks, directories and special files are not "
                                             "allowed",)), 0), Effective()
    parsed, effective = judge(read_source(filename, data), layers)
    origin = effective.origins.get("server")
    line = origin.line if isinstance(parsed, SiteDeclaration) and parsed.server == LOCAL_SERVER and origin else 0
    return (parsed, line), effective


def assemble(parsed: Iterable[tuple[str, Parsed]], commit: str | None,
             origins: Mapping[str, Mapping[str, Origin]] | None = None) -> Declarations:
    """Declarations from each file's result (`parse_file`), in file-name order; `origins`: where
    each key of each site came from (`parse_layered`), when known."""
    result = Declarations(commit=commit)
    for _, (found, line) in sorted(parsed, key=lambda item: item[0]):
        if isinstance(found, InvalidSite):
            result.invalid[found.domain] = found
        else:
            result.sites[found.domain] = found
            if origins and found.domain in origins:
                result.origins[found.domain] = dict(origins[found.domain])
            if line:
                result.local_lines[found.domain] = line
    return result


def read_layer(filename: str, data: bytes | None) -> Source:
    """`_defaults.toml` or a template, read (None: a symlink or special file, never followed)."""
    if data is None:
        filename = printable(filename)
        return Source(filename, errors=(f"{filename}:1: file: symlinks, directories and special files are not "
                                        "allowed",))
    return read_source(filename, data)


def read_layers(defaults: bytes | bool | None, templates: Iterable[tuple[str, bytes | None]]) -> Layers:
    """The layer files of one commit or directory: `defaults` the bytes of sites.d/_defaults.toml
    (False: there is none); `templates` (templates/<name>.toml, bytes) pairs."""
    found = {}
    for filename, data in templates:
        name = posixpath.basename(filename).removesuffix(".toml")
        if check_template_name(name) is None:  # any other name no site can name: ignored
            found[name] = read_layer(filename, data)
    layer = None if defaults is False else read_layer(DEFAULTS_FILE, defaults if isinstance(defaults, bytes) else None)
    return Layers(layer, found)


def collect(files: Iterable[tuple[str, bytes | None]], commit: str | None,
            layers: Layers = NO_LAYERS) -> Declarations:
    parsed: list[tuple[str, Parsed]] = []
    origins: dict[str, dict[str, Origin]] = {}
    for filename, data in files:
        (found, line), effective = parse_layered(filename, data, layers)
        parsed.append((filename, (found, line)))
        origins[found.domain] = effective.origins
    return assemble(parsed, commit, origins)
