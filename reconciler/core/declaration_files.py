"""Declaration files: `sites.d/*.toml` as bytes in, a validated site or the file's errors out.
The one strict parser of what an operator commits (a file too large, nested too deep, not TOML,
or failing the model's validation is that file's `InvalidSite`, with the line of each key); a
commit's files assembled into `Declarations`. Pure: `engine.source` reads the files.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from reconciler.core.declarations import (
    LOCAL_SERVER,
    MAX_ERRORS,
    MAX_FILE_BYTES,
    MAX_NESTING,
    Declarations,
    InvalidSite,
    SiteDeclaration,
    check_domain,
)
from reconciler.core.text import printable


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

Lines = dict[tuple[str, ...], int]  # a key's path (("health", "retries")) -> the line it is set on


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


def _line_of(lines: Lines, path: Iterable[str]) -> int:
    """The line of the key at `path`, else of its nearest parent that has one (a key inside an
    inline table is on its table's line), else 1."""
    parts = tuple(path)
    for n in range(len(parts), 0, -1):
        if (found := lines.get(parts[:n])) is not None:
            return found
    return 1


def _invalid(stem: str, filename: str, errors: list[str], server: str = "") -> InvalidSite:
    unique = list(dict.fromkeys(errors))
    if len(unique) > MAX_ERRORS:
        unique = [*unique[:MAX_ERRORS], f"{filename}: ... and {len(unique) - MAX_ERRORS} more errors"]
    return InvalidSite(stem, filename, tuple(unique), server)


def parse_site(filename: str, data: bytes) -> SiteDeclaration | InvalidSite:
    """Parse and validate one file. `filename` is its path in the repository."""
    filename = printable(filename)
    stem = posixpath.basename(filename).removesuffix(".toml")
    if len(data) > MAX_FILE_BYTES:
        return _invalid(stem, filename, [f"{filename}:1: file: larger than {MAX_FILE_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return _invalid(stem, filename, [f"{filename}:{line}: file: not UTF-8"])
    if _nesting(text) > MAX_NESTING:
        return _invalid(stem, filename, [f"{filename}:1: file: nested deeper than {MAX_NESTING} levels"])
    # tomllib is quadratic in the parts of a dotted key: refuse absurd ones before parsing.
    for number, row in enumerate(text.splitlines(), 1):
        if (key_part := row.partition("=")[0]).count(".") > MAX_NESTING:
            first = printable(key_part.strip().strip("[").split(".")[0].strip()) or "file"
            message = f"{filename}:{number}: {first}: dotted key deeper than {MAX_NESTING} parts"
            return _invalid(stem, filename, [message])
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else max(1, text.count("\n") + (not text.endswith("\n")))
        return _invalid(stem, filename, [f"{filename}:{line}: file: {printable(str(exc))}"])
    except RecursionError:
        return _invalid(stem, filename, [f"{filename}:1: file: nested too deeply"])
    server = raw.get("server") if isinstance(raw.get("server"), str) else ""
    lines = _key_lines(text)
    errors: list[str] = []
    if problem := check_domain(stem):
        errors.append(f"{filename}:1: domain: file name {stem!r} is not a lower-case DNS name: {problem}")
    if "domain" in raw and raw["domain"] != stem:
        errors.append(f"{filename}:{_line_of(lines, ['domain'])}: domain: must equal the file name {stem!r}")
    try:
        site = SiteDeclaration.model_validate({**raw, "domain": stem})
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
            errors.append(f"{filename}:{_line_of(lines, path)}: {printable(name) or 'file'}: {printable(message)}")
        return _invalid(stem, filename, errors, printable(str(server)))
    if errors:
        return _invalid(stem, filename, errors, printable(str(server)))
    return site


Parsed = tuple["SiteDeclaration | InvalidSite", int]  # a file's result, and its `server` line when "local"


def parse_file(filename: str, data: bytes | None) -> Parsed:
    """One file of sites.d/ (None: a symlink, directory or special file, never followed)."""
    if data is None:
        filename = printable(filename)
        stem = posixpath.basename(filename).removesuffix(".toml")
        return InvalidSite(stem, filename, (f"{filename}:1: file: symlinks, directories and special files are not "
                                            "allowed",)), 0
    parsed = parse_site(filename, data)
    # Rare: the file was decoded once already.
    line = (_line_of(_key_lines(data.decode("utf-8")), ["server"])
            if isinstance(parsed, SiteDeclaration) and parsed.server == LOCAL_SERVER else 0)
    return parsed, line


def assemble(parsed: Iterable[tuple[str, Parsed]], commit: str | None) -> Declarations:
    """Declarations from each file's result (`parse_file`), in file-name order."""
    result = Declarations(commit=commit)
    for _, (found, line) in sorted(parsed, key=lambda item: item[0]):
        if isinstance(found, InvalidSite):
            result.invalid[found.domain] = found
        else:
            result.sites[found.domain] = found
            if line:
                result.local_lines[found.domain] = line
    return result


def collect(files: Iterable[tuple[str, bytes | None]], commit: str | None) -> Declarations:
    return assemble(((filename, parse_file(filename, data)) for filename, data in files), commit)
