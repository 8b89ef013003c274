"""The hostile declaration corpus: one `Case` per file committed to `sites.d/`.

Every case is a declaration that SPEC §2 makes Invalid. Its payload references a canary file
unique to the case (`CANARY_<id>`, as an absolute path or relative to the shell's cwd) so a
payload that ever reaches a shell leaves evidence naming the case. Every field-level case also
carries `script = "touch <canary>-script"`: a site that is wrongly accepted and deployed shows up too.

Cases are grouped in batches; each batch is one declarations repo and one reconcile:
  values   field values (metacharacters, option injection, traversal, control characters, types,
           TOML structure); the `ssh` subset declares the real sshd as its server
  files    file-level: names, case duplicates, symlinks, directories, submodules, encodings, sizes
  encoding a file name that is not UTF-8 (alone: it takes the whole pass down)
  nesting  TOML bombs by depth
  width    TOML bombs by width (keys, dotted keys, array elements)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SCRIPT_SUFFIX = "-script"


@dataclass(frozen=True)
class Ctx:
    """Where one case lives: its server, base path, app repository and canary."""

    server: str
    base: str
    repo: str
    canary: str  # absolute path of the case's canary
    token: str  # the canary's file name: a relative `touch` lands in the shell's cwd


@dataclass(frozen=True)
class Raw:
    """A TOML value written verbatim (tables, dates, deep nesting)."""

    text: str


Value = Any | Callable[[Ctx], Any]
Body = Callable[[Ctx], bytes]


@dataclass(frozen=True)
class Case:
    id: str
    file: str | bytes  # the name inside sites.d/ (bytes: not UTF-8)
    body: Body | None = None
    key: str | None = None  # the key the error must name; None: a whole-file error
    lines: tuple[int, ...] = ()  # acceptable lines; () = the line where `key` is assigned in the body
    batch: str = "values"
    kind: str = "file"  # file | symlink | dir | submodule
    target: str = ""  # symlink target
    ssh: bool = False  # declared on the real sshd
    file_re: str = ""  # a regex for the file name when it cannot be spelled literally in a message

    @property
    def name(self) -> str:
        return os.fsdecode(self.file)

    @property
    def domain(self) -> str:
        """The stem: the domain the implementation reports the file under."""
        return self.name.removesuffix(".toml")

    @property
    def token(self) -> str:
        return f"CANARY_{self.id}"


# --------------------------------------------------------------------------- TOML rendering


def toml(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def declaration(ctx: Ctx, fields: dict[str, Value] | None = None, tail: str = "") -> bytes:
    """server, base_path, repository, script on lines 1-4 (overridden in place), then other
    fields one per line, then `tail` verbatim."""
    values: dict[str, Value] = {
        "server": ctx.server,
        "base_path": ctx.base,
        "repository": ctx.repo,
        "script": f"touch {ctx.canary}{SCRIPT_SUFFIX}\n",
    }
    values.update(fields or {})
    text = "".join(f"{k} = {toml(v(ctx) if callable(v) else v)}\n" for k, v in values.items())
    return (text + tail).encode()


def key_line(text: str, key: str) -> int:
    """The line where `key = ` is assigned, found independently of the implementation."""
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    raise AssertionError(f"{key} is not assigned in {text[:200]!r}")


def setting(case_id: str, key: str, value: Value, *, ssh: bool = False, batch: str = "values",
          error_key: str | None = None) -> Case:
    """A case whose file sets `key` to `value` (a callable gets the case's Ctx)."""
    return Case(case_id, f"{case_id}.example.com.toml", lambda c: declaration(c, {key: value}),
                key=error_key or key, batch=batch, ssh=ssh)


def raw(case_id: str, text: Callable[[Ctx], str | bytes], key: str | None, *lines: int,
        batch: str = "values", ssh: bool = False, file: str | bytes | None = None, file_re: str = "") -> Case:
    def body(c: Ctx) -> bytes:
        data = text(c)
        return data if isinstance(data, bytes) else data.encode()

    return Case(case_id, file if file is not None else f"{case_id}.example.com.toml", body, key=key,
                lines=lines, batch=batch, ssh=ssh, file_re=file_re)


def head(c: Ctx) -> str:
    """A sane declaration (4 lines) for raw cases to extend."""
    return declaration(c).decode()


# --------------------------------------------------------------------------- shell metacharacters

# Each wraps a field-appropriate prefix `x` around `touch <canary>` so that it runs when the value is
# pasted into a shell unquoted, or inside '...' or "..." (the quote cases break out of those).
META: dict[str, Callable[[str, str], str]] = {
    "semicolon": lambda x, c: f"{x}; touch {c}",
    "and": lambda x, c: f"{x} && touch {c}",
    "pipe": lambda x, c: f"{x} | touch {c}",
    "subst": lambda x, c: f"{x}$(touch {c})",
    "backtick": lambda x, c: f"{x}`touch {c}`",
    "redirect": lambda x, c: f"{x} > {c}",
    "newline": lambda x, c: f"{x}\ntouch {c}",
    "squote": lambda x, c: f"{x}'; touch {c}; '",
    "dquote": lambda x, c: f'{x}"; touch {c}; "',
    "backslash": lambda x, c: f'{x}\\"; touch {c}; #',  # defeats escaping that only prefixes `"` with `\`
    "glob": lambda x, c: f"{x}* ; touch {c}",
    "tilde": lambda x, c: f"~/{x}; touch {c}",
}
SSH_META = ("semicolon", "subst", "newline")  # the subset also declared on the real sshd


def _prefixes(case_id: str) -> dict[str, Callable[[Ctx], str]]:
    return {
        "server": lambda c: "web-1",
        "repository": lambda c: c.repo,
        "branch": lambda c: "main",
        "pin": lambda c: "31072025-143022",
        "php": lambda c: "8.3",
        "domain": lambda c: f"{case_id}.example.com",
    }


def _meta_cases() -> list[Case]:
    cases = []
    for key in ("server", "repository", "branch", "pin", "php", "domain"):
        for meta, wrap in META.items():
            case_id = f"{key.replace('_', '-')}-{meta}"
            prefix = _prefixes(case_id)[key]
            cases.append(setting(case_id, key, lambda c, w=wrap, p=prefix: w(p(c), c.canary),
                               ssh=key != "server" and meta in SSH_META))
    # Where metacharacters are valid (base_path, shared), only control characters make them invalid.
    cases.append(setting("base-path-newline", "base_path", lambda c: f"{c.base}\ntouch {c.canary}", ssh=True))
    cases.append(setting("shared-newline", "shared", lambda c: ["storage", f"x\ntouch {c.canary}"], ssh=True))
    return cases


# --------------------------------------------------------------------------- option injection, traversal

OPTION_CASES = [
    setting("server-proxycommand", "server", lambda c: f"-oProxyCommand=touch {c.canary}"),
    setting("server-proxycommand-ifs", "server", lambda c: f"-oProxyCommand=touch${{IFS}}{c.canary}"),
    setting("server-user-option-host", "server", lambda c: f"deploy@-oProxyCommand=touch${{IFS}}{c.canary}"),
    setting("repository-upload-pack", "repository", lambda c: f"--upload-pack=touch {c.canary}", ssh=True),
    setting("repository-upload-pack-ifs", "repository", lambda c: f"--upload-pack=touch${{IFS}}{c.canary}", ssh=True),
    setting("repository-config-option", "repository", lambda c: f"-c core.sshCommand=touch${{IFS}}{c.canary}"),
    setting("repository-ext-transport", "repository", lambda c: f"ext::sh -c touch% {c.canary}", ssh=True),
    setting("repository-ext-upper", "repository", lambda c: f"Ext::touch%{c.canary}"),
    setting("repository-fd-transport", "repository", "fd::0"),
    setting("branch-double-dash", "branch", "--foo", ssh=True),
    setting("branch-option-ifs", "branch", lambda c: f"--upload-pack=touch${{IFS}}{c.canary}"),
    setting("base-path-dash", "base_path", "-x"),
    setting("shared-rf", "shared", ["storage", "-rf"], ssh=True),
    setting("shared-rf-slash", "shared", ["-rf/x"]),
    setting("pin-dash", "pin", "-x"),
    setting("php-dash", "php", "-8.3"),
]

TRAVERSAL_CASES = [
    setting("shared-up-etc", "shared", ["../../etc"], ssh=True),
    setting("shared-nested-up", "shared", ["storage/../../../etc"]),
    setting("shared-absolute", "shared", ["/etc"]),
    setting("shared-dot", "shared", ["."]),
    setting("shared-empty-entry", "shared", ["storage", ""]),
    setting("base-path-home-up-etc", "base_path", "/home/../etc", ssh=True),
    setting("base-path-trailing-up", "base_path", lambda c: f"{c.base}/.."),
    setting("base-path-relative", "base_path", "srv"),
    setting("base-path-dot-relative", "base_path", "./srv"),
    setting("base-path-tilde", "base_path", "~/srv"),
    setting("base-path-root", "base_path", "/"),
    setting("base-path-slashes", "base_path", "///"),
    setting("domain-up-etc", "domain", "../../etc"),
]

# --------------------------------------------------------------------------- NUL and control characters

CONTROL = {"nul": "\x00", "esc": "\x1b", "cr": "\r", "del": "\x7f"}


def _control_cases() -> list[Case]:
    values: dict[str, Callable[[Ctx, str], Any]] = {
        "server": lambda c, ch: f"web-1{ch}",
        "base_path": lambda c, ch: f"{c.base}/x{ch}",
        "repository": lambda c, ch: f"{c.repo}{ch}",
        "branch": lambda c, ch: f"main{ch}",
        "pin": lambda c, ch: f"31072025-143022{ch}",
        "php": lambda c, ch: f"8.3{ch}",
        "shared": lambda c, ch: ["storage", f"x{ch}"],
        "domain": lambda c, ch: f"{ch}",
    }
    cases = []
    for key, make in values.items():
        for name, ch in CONTROL.items():
            case_id = f"{key.replace('_', '-')}-{name}"
            cases.append(setting(case_id, key, lambda c, m=make, x=ch: m(c, x), ssh=name == "nul" and key != "server"))
    # Code is code, but a NUL cannot be passed to a shell intact.
    cases.append(setting("script-nul", "script", lambda c: f"true\x00touch {c.canary}", ssh=True))
    cases.append(setting("reload-nul", "reload", lambda c: f"true\x00touch {c.canary}"))
    return cases


# --------------------------------------------------------------------------- wrong types

TYPE_CASES = [
    setting("type-server-int", "server", 1),
    setting("type-server-date", "server", Raw("1979-05-27")),
    setting("type-server-array", "server", ["local"]),
    setting("type-base-path-int", "base_path", 1),
    setting("type-base-path-array", "base_path", lambda c: [c.base]),
    setting("type-repository-bool", "repository", True),
    setting("type-repository-table", "repository", lambda c: {"url": c.repo}),
    setting("type-branch-float", "branch", 1.5),
    setting("type-branch-array", "branch", ["main"]),
    setting("type-script-array", "script", lambda c: [f"touch {c.canary}"]),
    setting("type-script-table", "script", lambda c: {"run": f"touch {c.canary}"}),
    setting("type-script-int", "script", 0),
    setting("type-pin-datetime", "pin", Raw("2025-07-31T14:30:22")),
    setting("type-pin-int", "pin", 31072025143022),
    setting("type-keep-string", "keep", "14"),
    setting("type-keep-bool", "keep", True),
    setting("type-keep-float", "keep", 14.0),
    setting("type-keep-table", "keep", {"n": 14}),
    setting("type-keep-time", "keep", Raw("14:30:22")),
    setting("type-shared-table", "shared", {"storage": True}),
    setting("type-shared-ints", "shared", [1, 2]),
    setting("type-shared-string", "shared", "storage"),
    setting("type-shared-mixed", "shared", ["storage", 1]),
    setting("type-shared-nested", "shared", [["storage"]]),
    setting("type-php-float", "php", 8.3),
    setting("type-php-int", "php", 8),
    setting("type-reload-table", "reload", lambda c: {"cmd": f"touch {c.canary}"}),
    setting("type-reload-bool", "reload", True),
    setting("type-domain-int", "domain", 1),
    setting("type-domain-array", "domain", lambda c: ["type-domain-array.example.com"]),
]

# --------------------------------------------------------------------------- TOML structure

STRUCTURE_CASES = [
    # Duplicate keys are TOML errors: whole-file, at the line of the second definition.
    raw("dup-key", lambda c: head(c) + 'server = "local"\n', None, 5, ssh=True),
    raw("dup-key-quoted", lambda c: head(c) + '"server" = "local"\n', None, 5),
    raw("dup-key-literal-quoted", lambda c: head(c) + "'script' = 'true'\n", None, 5),
    raw("toml-error-at-eof", lambda c: head(c) + "\n\nkeep =", None, 7),
    raw("dup-table", lambda c: head(c) + "[x]\n[x]\n", None, 6),
    raw("dup-table-vs-dotted", lambda c: head(c) + "x.a = 1\n[x]\na = 2\n", None, 6, 7),
    # Keys inside a table are not top-level keys.
    raw("table-site", lambda c: "[site]\n" + head(c), "site", 1),
    raw("table-after", lambda c: head(c) + "\n[site]\nkeep = 0\n", "site", 6),
    raw("array-of-tables", lambda c: head(c) + '[[site]]\nserver = "local"\n', "site", 5),
    raw("dotted-server", lambda c: head(c).replace("server = ", "server.host = ", 1), "server", 1),
    raw("dotted-unknown", lambda c: head(c) + f'deploy.script = "touch {c.canary}"\n', "deploy", 5),
    raw("inline-unknown", lambda c: head(c) + f'site = {{ script = "touch {c.canary}" }}\n', "site", 5),
    raw("key-case-script", lambda c: head(c) + f'SCRIPT = "touch {c.canary}"\n', "SCRIPT", 5),
    raw("key-quoted-space", lambda c: head(c) + '"server " = "local"\n', "server ", 5),
    raw("missing-required", lambda c: f'base_path = "{c.base}"\nbranch = "main"\n', "server", 1),
    raw("empty-file", lambda c: "", "server", 1),
    # A key naming a control character: the error must not carry it raw (terminal/log injection).
    raw("key-escape-sequence", lambda c: head(c) + '"\\u001b[2J" = 1\n', None, 5),
    raw("key-newline", lambda c: head(c) + '"x\\nsites.d/good.example.com.toml:1: server" = 1\n', None, 5),
]

# --------------------------------------------------------------------------- file-level cases

SECRETS = "secrets.toml"  # at the declarations repository's root; a valid declaration with a canary script


def _good_text(c: Ctx) -> bytes:
    return declaration(c)


FILE_CASES = [
    Case("case-duplicate", "Good.example.com.toml", _good_text, key="domain", lines=(1,), batch="files"),
    Case("case-duplicate-key", "case-duplicate-key.example.com.toml",
         lambda c: declaration(c, {"domain": "Case-Duplicate-Key.example.com"}), key="domain", batch="files"),
    Case("domain-claims-good", "domain-claims-good.example.com.toml",
         lambda c: declaration(c, {"domain": "good.example.com"}), key="domain", batch="files"),
    Case("filename-space", "my shop.example.com.toml", _good_text, key="domain", lines=(1,), batch="files"),
    Case("filename-dash-rf", "-rf.toml", _good_text, key="domain", lines=(1,), batch="files"),
    Case("filename-trailing-dot", "trailing.example.com..toml", _good_text, key="domain", lines=(1,), batch="files"),
    Case("filename-dotdot", "...toml", _good_text, key="domain", lines=(1,), batch="files"),
    Case("filename-empty-stem", ".toml", _good_text, key="domain", lines=(1,), batch="files"),
    Case("filename-subst", "$(touch CANARY_filename-subst).example.com.toml", _good_text, key="domain",
         lines=(1,), batch="files"),
    Case("filename-backtick", "`touch CANARY_filename-backtick`.example.com.toml", _good_text, key="domain",
         lines=(1,), batch="files"),
    Case("filename-glob", "*.example.com.toml", _good_text, key="domain", lines=(1,), batch="files"),
    Case("filename-newline", "a\nnewline.example.com.toml", _good_text, key="domain", lines=(1,), batch="files",
         file_re=r"sites\.d/a.{1,6}newline\.example\.com\.toml"),
    Case("filename-escape", "\x1b[31mred.example.com.toml", _good_text, key="domain", lines=(1,), batch="files",
         file_re=r"sites\.d/.{1,8}\[31mred\.example\.com\.toml"),
    Case("filename-not-utf8", b"\xffbadbyte.example.com.toml", _good_text, key="domain", lines=(1,),
         batch="encoding", file_re=r"sites\.d/[^:]{1,8}badbyte\.example\.com\.toml"),
    Case("content-not-utf8", "content-not-utf8.example.com.toml",
         lambda c: declaration(c) + b"# caf\xe9\n", key=None, lines=(1, 5), batch="files"),
    Case("content-utf16", "content-utf16.example.com.toml",
         lambda c: declaration(c).decode().encode("utf-16"), key=None, lines=(1,), batch="files"),
    Case("content-bom", "content-bom.example.com.toml", lambda c: b"\xef\xbb\xbf" + declaration(c),
         key=None, lines=(1,), batch="files"),
    Case("content-raw-nul", "content-raw-nul.example.com.toml",
         lambda c: declaration(c) + b'branch = "main\x00"\n', key=None, lines=(5,), batch="files"),
    Case("content-raw-escape", "content-raw-escape.example.com.toml",
         lambda c: declaration(c) + b'branch = "main\x1b[2J"\n', key=None, lines=(5,), batch="files"),
    Case("content-raw-cr", "content-raw-cr.example.com.toml",
         lambda c: declaration(c) + b"keep = 3\rkeep = 0\n", key=None, lines=(5,), batch="files"),
    Case("huge-script", "huge-script.example.com.toml",
         lambda c: declaration(c, {"script": f"touch {c.canary}\n" + "#" * (1 << 20) + "\n"}),
         key=None, lines=(1,), batch="files"),
    Case("huge-repository", "huge-repository.example.com.toml",
         lambda c: declaration(c, {"repository": c.repo + "x" * 100_000}), key=None, lines=(1,), batch="files"),
    Case("huge-comment", "huge-comment.example.com.toml",
         lambda c: declaration(c) + b"#" * (70 * 1024) + b"\n", key=None, lines=(1,), batch="files"),
    Case("symlink-etc-passwd", "symlink-etc-passwd.example.com.toml", kind="symlink", target="/etc/passwd",
         lines=(1,), batch="files"),
    Case("symlink-secrets", "symlink-secrets.example.com.toml", kind="symlink", target=f"../{SECRETS}",
         lines=(1,), batch="files"),
    Case("symlink-inside", "symlink-inside.example.com.toml", kind="symlink", target="good.example.com.toml",
         lines=(1,), batch="files"),
    Case("symlink-dir", "symlink-dir.example.com.toml", kind="symlink", target="/etc", lines=(1,), batch="files"),
    Case("symlink-dangling", "symlink-dangling.example.com.toml", kind="symlink", target="/nonexistent/x.toml",
         lines=(1,), batch="files"),
    Case("dir-named-toml", "dir-named-toml.example.com.toml", _good_text, kind="dir", lines=(1,), batch="files"),
    Case("submodule-named-toml", "submodule-named-toml.example.com.toml", kind="submodule", lines=(1,),
         batch="files"),
]

# --------------------------------------------------------------------------- TOML bombs


def _nested(open_: str, close: str, inner: str, depth: int) -> str:
    return open_ * depth + inner + close * depth


BOMB_CASES = [
    raw("nested-arrays-10000", lambda c: head(c) + f"x = {_nested('[', ']', '', 10_000)}\n", None, 1, 5,
        batch="nesting"),
    raw("nested-arrays-1000", lambda c: head(c) + f"x = {_nested('[', ']', '', 1_000)}\n", None, 1, 5,
        batch="nesting"),
    raw("nested-shared-10000", lambda c: head(c) + f"shared = {_nested('[', ']', '1', 10_000)}\n", None, 1, 5,
        batch="nesting"),
    raw("nested-inline-tables-10000", lambda c: head(c) + f"x = {_nested('{a=', '}', '1', 10_000)}\n",
        None, 1, 5, batch="nesting"),
    raw("nested-mixed-5000", lambda c: head(c) + f"x = {_nested('[{a=', '}]', '1', 5_000)}\n", None, 1, 5,
        batch="nesting"),
    raw("nested-arrays-100", lambda c: head(c) + f"x = {_nested('[', ']', '', 100)}\n", None, 1, 5,
        batch="nesting"),
    raw("many-keys", lambda c: head(c) + "".join(f"k{i}=1\n" for i in range(500)), "k0", 5, batch="width"),
    raw("dotted-key-2000", lambda c: head(c) + "x" + ".a" * 2_000 + " = 1\n", "x", 5, batch="width"),
    raw("shared-30000-ints", lambda c: head(c) + "shared = [" + "1," * 30_000 + "]\n", "shared", 5,
        batch="width"),
]

# As wide as the 64 kB size limit allows. Judged by parse_site alone (test_each_file_alone_is_judged_quickly),
# not in a batch: today each costs 9-21 s per load, and a batch loads its files four times.
STRESS_CASES = [
    raw("many-keys-max", lambda c: head(c) + "".join(f"k{i}=1\n" for i in range(8_000)), "k0", 5, batch="parse"),
    raw("many-tables-max", lambda c: head(c) + "".join(f"[t{i}]\n" for i in range(8_000)), "t0", 5,
        batch="parse"),
    raw("dotted-key-max", lambda c: head(c) + "x" + ".a" * 30_000 + " = 1\n", "x", 5, batch="parse"),
]

CASES: list[Case] = [
    *_meta_cases(), *OPTION_CASES, *TRAVERSAL_CASES, *_control_cases(), *TYPE_CASES, *STRUCTURE_CASES,
    *FILE_CASES, *BOMB_CASES,
]
BATCHES = ("values", "files", "encoding", "nesting", "width")


def _check_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    names = [(c.batch, c.file) for c in CASES]
    assert len(names) == len(set(names)), "two cases write the same file"


_check_unique()
