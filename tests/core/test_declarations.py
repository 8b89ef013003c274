"""Table-driven tests of reconciler.core.declarations: every rule of SPEC §2, valid and invalid,
the `file:line: key: message` error format, and loading from real git repositories."""

from __future__ import annotations

import os
import re
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import (
    DEFAULT_SHARED,
    MAX_FILE_BYTES,
    InvalidSite,
    SiteDeclaration,
    printable,
)
from reconciler.engine.source import load, load_directory
from reconciler.errors import DeclarationError
from reconciler.remote.transport.ssh import parse_destination
from tests.support import git, make_decl_repo, toml_value, write_site

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


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    site = parse_fields()
    assert isinstance(site, SiteDeclaration), site
    assert site.domain == DOMAIN
    assert site.server == "local"
    assert site.repository == "/srv/git/shop.git"
    assert site.base_path == "/home/brokeforge"
    assert site.branch == "main"
    assert site.script == ""
    assert site.pin is None
    assert site.keep == 14
    assert site.shared == ["storage", ".env", "vendor", "node_modules"]
    assert list(DEFAULT_SHARED) == ["storage", ".env", "vendor", "node_modules"]
    assert site.php is None
    assert site.reload is None
    assert site.reload_command is None


def test_full_declaration_from_spec() -> None:
    text = '''server     = "web-1"
base_path  = "/home/brokeforge"
repository = "git@github.com:acme/shop.git"
branch     = "main"
script     = """
composer install --no-dev --no-interaction
php artisan migrate --force
"""
pin        = "31072025-143022"
keep       = 14
shared     = ["storage", ".env", "vendor", "node_modules"]
php        = "8.3"
'''
    site = parse(text)
    assert isinstance(site, SiteDeclaration), site
    assert site.server == "web-1"
    assert site.repository == "git@github.com:acme/shop.git"
    assert site.pin == "31072025-143022"
    assert site.script == "composer install --no-dev --no-interaction\nphp artisan migrate --force\n"
    assert site.reload_command == "sudo service php8.3-fpm reload"


@pytest.mark.parametrize(
    ("overrides", "command"),
    [
        ({}, None),
        ({"php": "8.3"}, "sudo service php8.3-fpm reload"),
        ({"php": "7.4"}, "sudo service php7.4-fpm reload"),
        ({"reload": "systemctl reload nginx"}, "systemctl reload nginx"),
        ({"php": "8.3", "reload": "systemctl reload php-fpm"}, "systemctl reload php-fpm"),  # reload overrides php
    ],
)
def test_reload_command(overrides: dict[str, Any], command: str | None) -> None:
    site = parse_fields(**overrides)
    assert isinstance(site, SiteDeclaration), site
    assert site.reload_command == command


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"script": "php artisan migrate --force\n"}, True),
        ({"shared": ["storage", ".env"]}, True),
        ({"shared": [".env", "storage", "vendor", "node_modules"]}, True),  # order of links is part of the build
        ({"branch": "develop"}, False),
        ({"keep": 3}, False),
        ({"pin": "31072025-143022"}, False),
        ({"php": "8.3"}, False),
        ({"server": "web-2"}, False),
    ],
)
def test_build_key(change: dict[str, Any], differs: bool) -> None:
    before = parse_fields()
    after = parse_fields(**change)
    assert isinstance(before, SiteDeclaration)
    assert isinstance(after, SiteDeclaration), after
    assert (before.build_key != after.build_key) is differs


# --------------------------------------------------------------------------- valid values


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("domain", DOMAIN),
        ("server", "local"),
        ("server", "web-1"),
        ("server", "web-1.example.com"),
        ("server", "deploy@10.0.0.5:2222"),
        ("server", "deploy@web-1"),
        ("server", "10.0.0.5"),
        ("server", "[::1]:22"),
        ("server", "[::1]"),
        ("server", "deploy@[2001:db8::1]:2222"),
        ("server", "web_1"),
        ("base_path", "/home/brokeforge"),
        ("base_path", "/srv/www"),
        ("base_path", "/srv/www_2/Site-A.v1"),
        ("repository", "git@github.com:acme/shop.git"),
        ("repository", "https://github.com/acme/shop.git"),
        ("repository", "ssh://deploy@git.example.com:2222/acme/shop.git"),
        ("repository", "/srv/git/shop.git"),
        ("repository", "file:///srv/git/shop.git"),
        ("branch", "main"),
        ("branch", "feature/x"),
        ("branch", "release-1.2"),
        ("branch", "hotfix/2025.08/urgent_fix"),
        ("branch", "a@b"),
        ("branch", "x.locked"),
        ("script", ""),
        ("script", "set -x\nphp artisan migrate --force && echo $HOME; touch done\n"),
        ("pin", "31072025-143022"),
        ("pin", "29022024-235959"),
        ("keep", 1),
        ("keep", 14),
        ("keep", 1000),
        ("shared", []),
        ("shared", ["storage"]),
        ("shared", [".env"]),
        ("shared", ["storage/app/public", "public/uploads", ".env"]),
        ("shared", ["node_modules", "vendor"]),
        ("php", "8.3"),
        ("php", "7.4"),
        ("php", "8.10"),
        ("reload", ""),
        ("reload", "sudo systemctl reload php8.3-fpm"),
    ],
)
def test_valid_value(key: str, value: Any) -> None:
    site = parse_fields(**{key: value})
    assert isinstance(site, SiteDeclaration), getattr(site, "errors", site)
    assert getattr(site, key) == value


def test_base_path_trailing_slash_is_normalised() -> None:
    site = parse_fields(base_path="/srv/www/")
    assert isinstance(site, SiteDeclaration), site
    assert site.base_path == "/srv/www"


def test_domain_key_equal_to_stem_is_accepted() -> None:
    site = parse(render({"domain": DOMAIN, **BASE}))
    assert isinstance(site, SiteDeclaration), site
    assert site.domain == DOMAIN


def test_reload_empty_disables_php_reload() -> None:
    site = parse_fields(php="8.3", reload="")
    assert isinstance(site, SiteDeclaration), site
    assert site.reload_command is None


# --------------------------------------------------------------------------- invalid values


CONTROL_1 = "\x01"


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        # unknown keys and strict types
        ("colour", "blue", "unknown key"),
        ("Server", "local", "unknown key"),
        ("keep", "14", ""),
        ("keep", 14.0, ""),
        ("keep", True, ""),
        ("keep", [14], ""),
        ("branch", 1, ""),
        ("branch", True, ""),
        ("server", 1, ""),
        ("repository", 1, ""),
        ("base_path", 1, ""),
        ("script", 1, ""),
        ("script", ["a", "b"], ""),
        ("pin", 31072025, ""),
        ("shared", "storage", ""),
        ("shared", [1], ""),
        ("shared", [["storage"]], ""),
        ("php", 8.3, ""),
        ("reload", 1, ""),
        ("domain", 1, ""),
        # domain key must equal the stem
        ("domain", "other.example.com", "file name"),
        ("domain", "../etc", ""),
        ("domain", "Shop.example.com", ""),
        # branch
        ("branch", "main;touch x", ""),
        ("branch", "-x", "-"),
        ("branch", "--upload-pack=x", "-"),
        ("branch", "a..b", ""),
        ("branch", "x.lock", ""),
        ("branch", "feature/x.lock", ""),
        ("branch", "a.lock/b", ""),
        ("branch", "@{", ""),
        ("branch", "a@{1}", ""),
        ("branch", "@", ""),
        ("branch", "HEAD", ""),  # `git check-ref-format --branch HEAD` refuses it
        ("branch", "", ""),
        ("branch", "a b", ""),
        ("branch", "a\tb", ""),
        ("branch", "a" + CONTROL_1, ""),
        ("branch", "a\x7f", ""),
        ("branch", "a~1", ""),
        ("branch", "a^2", ""),
        ("branch", "a:b", ""),
        ("branch", "a?", ""),
        ("branch", "a*", ""),
        ("branch", "a[b", ""),
        ("branch", "a\\b", ""),
        ("branch", "a//b", ""),
        ("branch", "feature/", ""),
        ("branch", "/feature", ""),
        ("branch", "feature.", ""),
        ("branch", ".hidden", ""),
        ("branch", "feature/.hidden", ""),
        # repository
        ("repository", "--upload-pack=touch /tmp/x", ""),
        ("repository", "-oProxyCommand=x", ""),
        ("repository", "ext::sh -c x", ""),
        ("repository", "ext::sh", "ext::"),
        ("repository", "EXT::sh", "ext::"),
        ("repository", "fd::3", "fd::"),
        ("repository", "/srv/my repo.git", "whitespace"),
        ("repository", "/srv/repo.git\t", "whitespace"),
        ("repository", "/srv/repo.git\nrm -rf /", "whitespace"),
        ("repository", "/srv/repo" + CONTROL_1 + ".git", ""),
        ("repository", "/srv/repo\x7f.git", ""),
        ("repository", "", ""),
        # pin
        ("pin", "2025-07-31", "ddMMYYYY-HHMMSS"),
        ("pin", "31072025", ""),
        ("pin", "31072025-1430", ""),
        ("pin", "31022025-101010", ""),  # 31 February
        ("pin", "29022025-101010", ""),  # not a leap year
        ("pin", "31072025-246000", ""),
        ("pin", "31072025-143022 ", ""),
        ("pin", "latest", ""),
        ("pin", "", ""),
        ("pin", "1\u0665072025-143022", ""),  # non-ASCII digit: not ddMMYYYY-HHMMSS
        # shared
        ("shared", ["/etc"], ""),
        ("shared", ["/"], ""),
        ("shared", ["../x"], ".."),
        ("shared", ["storage/../../etc"], ".."),
        ("shared", [".."], ".."),
        ("shared", [""], ""),
        ("shared", ["storage", "storage"], "twice"),
        ("shared", ["./storage"], ""),
        ("shared", ["storage//app"], ""),
        ("shared", ["storage/"], ""),
        ("shared", ["-rf"], ""),
        ("shared", ["a" + CONTROL_1], ""),
        ("shared", ["storage", "storage/app"], "overlap"),
        # keep
        ("keep", 0, "at least 1"),
        ("keep", -1, "at least 1"),
        # php
        ("php", "8", ""),
        ("php", "eight", ""),
        ("php", "8.3; reboot", ""),
        ("php", "8.3 ", ""),
        ("php", "8.3\n", ""),  # would split `sudo service php8.3\n-fpm reload` into two commands
        ("php", "", ""),
        # server
        ("server", "-oProxyCommand=x", ""),
        ("server", "-p22", ""),
        ("server", "user@-oProxyCommand=x", ""),
        ("server", "web-1 -p 22", ""),
        ("server", "web-1;id", ""),
        ("server", "$(id)", ""),
        ("server", "", ""),
        ("server", "web-1\n", ""),
        ("server", "deploy@@web-1", ""),
        # base_path
        ("base_path", "relative/path", "absolute"),
        ("base_path", "", ""),
        ("base_path", "/", ""),
        ("base_path", "/srv/../etc", ""),
        ("base_path", "/srv/./www", ""),
        ("base_path", "/srv/www" + CONTROL_1, ""),
        ("base_path", "/srv/www\n", ""),
        # a plain path: it is pasted into generated nginx config, so no spaces, semicolons or braces
        ("base_path", "/srv/a b", "may only contain"),
        ("base_path", "/srv/www;location /leak/{alias /etc/;}#", "may only contain"),
        ("base_path", "/srv/$(id)", "may only contain"),
        # code values must still be strings without NUL
        ("script", "echo a\x00b", "NUL"),
        ("reload", "reload\x00", "NUL"),
    ],
)
def test_invalid_value(key: str, value: Any, fragment: str) -> None:
    fields = {**BASE, key: value}
    text = render(fields)
    result = parse(text)
    assert_invalid(result, key, line_of(text, key), fragment)
    assert isinstance(result, InvalidSite)
    assert result.domain == DOMAIN
    assert result.file == FILE


@pytest.mark.parametrize("key", ["server", "repository"])
def test_required_keys(key: str) -> None:
    fields = dict(BASE)
    del fields[key]
    result = parse(render(fields))
    matches = errors_of(result)
    assert [m["key"] for m in matches] == [key]


def test_server_is_recorded_on_invalid_site() -> None:
    result = parse_fields(server="web-1", keep=0)
    assert isinstance(result, InvalidSite)
    assert result.server == "web-1"  # status can still say which server the broken site is on


# ---- server: only destinations the SSH transport can connect to (no crash in asyncssh/socket)

LABEL_63 = "a" * 63
HOST_253 = ".".join([LABEL_63] * 3 + ["b" * 61])  # 3 * 64 + 61 = 253

SHAPE = "[user@]host[:port]"  # the message when the shape itself is wrong

SERVERS_VALID = [
    "local",
    "web-1",  # an ssh_config Host alias is a bare host
    "web_1",
    "_web",
    "web-1.example.com",
    "deploy@web-1",
    "deploy.bot@web-1:2222",
    "10.0.0.5",
    "127.0.0.1:1",
    "127.0.0.1:65535",
    LABEL_63,
    f"{LABEL_63}.example.com",
    HOST_253,
    "u" * 64 + "@web-1",
    "[::1]",
    "[::1]:22",
    "deploy@[2001:db8::1]:2222",
    "[::ffff:10.0.0.5]",
]

SERVERS_INVALID = [
    # destinations that once crashed every pass in the resolver or connect(): now invalid
    ("a..b", "empty label"),  # idna: label empty
    ("a" * 64, "longer than 63"),  # idna: label too long
    ("127.0.0.1:99999", "1-65535"),  # OverflowError in connect()
    # ports
    ("127.0.0.1:65536", "1-65535"),
    ("127.0.0.1:0", "1-65535"),
    ("127.0.0.1:022", "leading zeros"),
    ("web-1:", SHAPE),
    ("web-1:22:22", SHAPE),
    ("web-1:2\u0662", SHAPE),  # an Arabic-Indic digit: int() would take it, the regex must not
    ("web-1:-1", SHAPE),
    ("web-1:" + "9" * 40, "1-65535"),
    # labels and lengths
    (".web-1", "empty label"),
    ("web-1.", "empty label"),
    ("web-1..example.com", "empty label"),
    (".", "empty label"),
    (f"{'a' * 64}.example.com", "longer than 63"),
    (HOST_253 + "b", "longer than 253"),
    ("deploy@a..b:22", "empty label"),
    ("web-\u00e9", SHAPE),  # hosts are ASCII: an alias or an IDNA A-label
    # IPv6
    ("[1.2.3.4]", "not an IPv6 address"),
    ("[::1::2]", "not an IPv6 address"),
    ("[:::]", "not an IPv6 address"),
    ("[]", SHAPE),
    ("::1", SHAPE),  # IPv6 only in brackets
    ("[::1]:99999", "1-65535"),
    # the user part
    ("u" * 65 + "@web-1", "longer than 64"),
    ("@web-1", SHAPE),
    ("-u@web-1", SHAPE),
    ("de ploy@web-1", SHAPE),
]


@pytest.mark.parametrize("server", SERVERS_VALID)
def test_valid_server(server: str) -> None:
    site = parse_fields(server=server)
    assert isinstance(site, SiteDeclaration), getattr(site, "errors", site)
    assert site.server == server


@pytest.mark.parametrize(("server", "fragment"), SERVERS_INVALID)
def test_invalid_server(server: str, fragment: str) -> None:
    text = render({**BASE, "server": server})
    result = parse(text)
    assert_invalid(result, "server", line_of(text, "server"), fragment)


@pytest.mark.parametrize("server", [s for s in SERVERS_VALID if s != "local"])
def test_valid_server_reaches_the_transport_intact(server: str) -> None:
    """What the validator accepts, the transport parses into something socket/idna accept."""
    _, host, port = parse_destination(server)
    host.encode("idna")
    assert port is None or 1 <= port <= 65535


# ---- branch rules agree with git itself (a check of this table, and of the SPEC's reference)

BRANCHES = [
    ("main", True), ("feature/x", True), ("release-1.2", True), ("a@b", True), ("x.locked", True),
    ("main;touch x", False), ("-x", False), ("a..b", False), ("x.lock", False), ("@{", False),
    ("HEAD", False), ("a b", False), ("a~1", False), ("a^2", False), ("a:b", False), ("a?", False),
    ("a*", False), ("a[b", False), ("a\\b", False), ("a//b", False), ("feature/", False),
    ("/feature", False), ("feature.", False), (".hidden", False), ("feature/.hidden", False),
    ("a.lock/b", False), ("a\x7f", False),
]


@pytest.mark.parametrize(("branch", "valid"), BRANCHES)
def test_branch_rules_match_git_check_ref_format(branch: str, valid: bool, tmp_path: Path) -> None:
    by_git = subprocess.run(["git", "check-ref-format", "--branch", branch], cwd=tmp_path,
                            capture_output=True).returncode == 0
    assert by_git is valid, "the table disagrees with git"
    assert isinstance(parse_fields(branch=branch), SiteDeclaration) is valid


# --------------------------------------------------------------------------- the domain (file stem)


@pytest.mark.parametrize(
    "domain",
    [
        "shop.example.com",
        "a.b",
        "x1.example.com",
        "my-shop.example.co.uk",
        "xn--bcher-kva.example",
        "1.2.3.4",
        "a" * 63 + ".com",
        ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61]),  # exactly 253 characters
    ],
)
def test_valid_domain_stem(domain: str) -> None:
    site = parse(render(BASE), domain)
    assert isinstance(site, SiteDeclaration), getattr(site, "errors", site)
    assert site.domain == domain


@pytest.mark.parametrize(
    "domain",
    [
        "Shop.example.com",
        "SHOP.EXAMPLE.COM",
        "localhost",
        "shop",
        "-shop.example.com",
        "shop-.example.com",
        "shop.-example.com",
        "shop.example.com-",
        "shop..example.com",
        ".shop.example.com",
        "shop.example.com.",
        "shop_x.example.com",
        "shop example.com",
        "shop;id.example.com",
        "shöp.example.com",
        "a" * 64 + ".com",  # label longer than 63
        ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62]),  # 254 characters
        "*.example.com",
        "shop.example.com\n",  # git allows a newline in a file name
    ],
)
def test_invalid_domain_stem(domain: str) -> None:
    result = parse(render(BASE), domain)
    matches = errors_of(result)
    assert isinstance(result, InvalidSite)
    assert any(m["key"] == "domain" and m["line"] == "1" for m in matches), result.errors
    # Control characters in a file name are escaped in messages (they must not forge lines).
    assert all(m["file"] == f"sites.d/{printable(domain)}.toml" for m in matches)


def test_path_like_file_name_is_invalid() -> None:
    # '../etc' can never be a domain: whatever the stem, it is reported and nothing is accepted.
    assert isinstance(parse_site("sites.d/../etc.toml", render(BASE).encode()), InvalidSite)
    result = parse(render({"domain": "../etc", **BASE}))
    assert_invalid(result, "domain", 1)


# --------------------------------------------------------------------------- error format, lines


def test_line_numbers_with_comments_and_blank_lines() -> None:
    text = """# shop.example.com

server     = "local"          # line 3

# the app
repository = "/srv/git/shop.git"
branch     = "-evil"          # line 7


keep       = 0                # line 10
shared     = ["../up"]        # line 11
colour     = "blue"           # line 12
"""
    result = parse(text)
    assert isinstance(result, InvalidSite)
    got = {(m["key"], int(m["line"])) for m in errors_of(result)}
    assert got == {("branch", 7), ("keep", 10), ("shared", 11), ("colour", 12)}


def test_every_error_is_reported() -> None:
    text = render({**BASE, "keep": 0, "branch": "a..b", "pin": "bad", "php": "x"})
    result = parse(text)
    keys = sorted(m["key"] for m in errors_of(result))
    assert keys == ["branch", "keep", "php", "pin"]
    for match in errors_of(result):
        assert int(match["line"]) == line_of(text, match["key"])


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ('server = "local"\nrepository = "/r"\n\n[deploy]\nscript = "x"\n', "deploy", 4),  # unknown table
        ('server = "local"\nrepository = "/r"\n\ndeploy.script = "x"\n', "deploy", 4),  # dotted key
        ('server = "local"\nrepository = "/r"\n"keep" = 0\n', "keep", 3),  # quoted key
        ('  server = "local"\n  repository = "/r"\n  keep = 0\n', "keep", 3),  # indented
    ],
)
def test_line_numbers_of_unusual_keys(text: str, key: str, line: int) -> None:
    assert_invalid(parse(text), key, line)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('server = \n', 1),
        ('server = "local"\nrepository = "/r"\nkeep = = 3\n', 3),
        ('server = "local"\nrepository = "/r\n', 2),  # unterminated string
        ('server = "local"\nserver = "web-1"\nrepository = "/r"\n', 2),  # duplicate key
        ('server = "local"\nrepository = "/r"\n\n\nshared = ["a" "b"]\n', 5),
        ('[[[\n', 1),
    ],
)
def test_toml_syntax_errors(text: str, line: int) -> None:
    result = parse(text)
    assert isinstance(result, InvalidSite), result
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{FILE}:{line}: "), result.errors


def test_not_utf8() -> None:
    result = parse_site(FILE, b'server = "local"\nrepository = "/r\xff"\n')
    assert isinstance(result, InvalidSite)
    assert result.errors[0].startswith(f"{FILE}:2: "), "the line holding the bad byte"


@pytest.mark.parametrize(("size", "valid"), [(MAX_FILE_BYTES, True), (MAX_FILE_BYTES + 1, False),
                                              (10 * MAX_FILE_BYTES, False)])
def test_file_size_limit(size: int, valid: bool) -> None:
    assert MAX_FILE_BYTES == 64 * 1024
    head = render(BASE).encode()
    data = head + b"#" * (size - len(head) - 1) + b"\n"
    assert len(data) == size
    result = parse_site(FILE, data)
    assert isinstance(result, SiteDeclaration) is valid
    if not valid:
        assert isinstance(result, InvalidSite)
        assert result.errors[0].startswith(f"{FILE}:1: ")
        assert "larger" in result.errors[0]


# --------------------------------------------------------------------------- load() from git


# declare(repo, domain, commit=True, **fields): sites.d/<domain>.toml of BASE plus `fields`.
declare = partial(write_site, **BASE)


def test_load_only_committed_tip_counts(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com", keep=5)
    declare(repo, "shop.example.com", commit=False, keep=7)  # uncommitted edit
    declare(repo, "new.example.com", commit=False)  # uncommitted new file
    (repo / "sites.d" / "staged.example.com.toml").write_text(render(BASE))
    git(repo, "add", "sites.d/staged.example.com.toml")  # staged but not committed
    decls = load(repo, "main")
    assert decls.commit == git(repo, "rev-parse", "HEAD")
    assert set(decls.sites) == {"shop.example.com"}
    assert decls.sites["shop.example.com"].keep == 5
    assert decls.invalid == {}
    # load_directory reads the work tree instead
    on_disk = load_directory(repo)
    assert on_disk.commit is None
    assert set(on_disk.sites) == {"shop.example.com", "new.example.com", "staged.example.com"}
    assert on_disk.sites["shop.example.com"].keep == 7


def test_load_reads_the_named_branch(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com", keep=5)
    git(repo, "checkout", "-q", "-b", "prod")
    declare(repo, "shop.example.com", keep=9)
    declare(repo, "prod.example.com")
    git(repo, "checkout", "-q", "main")  # the work tree is on main; prod is still read from its commit
    main, prod = load(repo, "main"), load(repo, "prod")
    assert set(main.sites) == {"shop.example.com"}
    assert main.sites["shop.example.com"].keep == 5
    assert set(prod.sites) == {"shop.example.com", "prod.example.com"}
    assert prod.sites["shop.example.com"].keep == 9
    assert prod.commit == git(repo, "rev-parse", "prod")


def test_load_bare_repository(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com", branch="feature/x")
    declare(repo, "bad.example.com", keep=0)
    bare = tmp_path / "sites.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    assert not (bare / "sites.d").exists()
    decls = load(bare, "main")
    assert decls.commit == git(repo, "rev-parse", "HEAD")
    assert set(decls.sites) == {"shop.example.com"}
    assert decls.sites["shop.example.com"].branch == "feature/x"
    assert set(decls.invalid) == {"bad.example.com"}


def test_load_after_gc_packed_refs(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com")
    git(repo, "pack-refs", "--all")
    git(repo, "gc", "-q")
    assert set(load(repo, "main").sites) == {"shop.example.com"}


def test_load_symlink_in_sites_d_is_invalid(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com")
    os.symlink("shop.example.com.toml", repo / "sites.d" / "alias.example.com.toml")
    os.symlink("/etc/passwd", repo / "sites.d" / "passwd.example.com.toml")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "symlinks")
    for decls in (load(repo, "main"), load_directory(repo)):
        assert set(decls.sites) == {"shop.example.com"}
        assert set(decls.invalid) == {"alias.example.com", "passwd.example.com"}
        for domain in ("alias.example.com", "passwd.example.com"):
            invalid = decls.invalid[domain]
            assert invalid.file == f"sites.d/{domain}.toml"
            assert invalid.errors[0].startswith(f"sites.d/{domain}.toml:1: ")
            assert "symlink" in invalid.message
            assert "root:" not in invalid.message  # the target is never read


def test_load_ignores_non_toml_and_subdirectories(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com")
    sites = repo / "sites.d"
    (sites / "README.md").write_text("not a site\n")
    (sites / "old.example.com.toml.bak").write_text("garbage = [\n")
    (sites / "notes.txt").write_text("keep = 0\n")
    (sites / "archive").mkdir()
    (sites / "archive" / "archived.example.com.toml").write_text(render(BASE))
    (repo / "other.example.com.toml").write_text(render(BASE))  # outside sites.d
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "clutter")
    for decls in (load(repo, "main"), load_directory(repo)):
        assert set(decls.sites) == {"shop.example.com"}
        assert decls.invalid == {}
        assert decls.errors == []


def test_invalid_site_does_not_stop_valid_ones(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "a.example.com")
    declare(repo, "b.example.com", keep=0)
    write_site(repo, "c.example.com", raw='server = "local"\nrepository = \n')  # TOML error
    declare(repo, "d.example.com", colour="blue")
    write_site(repo, "Upper.example.com", raw=render(BASE))
    declare(repo, "z.example.com", server="web-2")
    decls = load(repo, "main")
    assert set(decls.sites) == {"a.example.com", "z.example.com"}
    assert set(decls.invalid) == {"b.example.com", "c.example.com", "d.example.com", "Upper.example.com"}
    assert decls.sites["z.example.com"].server == "web-2"
    assert len(decls.errors) == 4
    for error in decls.errors:
        assert error.startswith("sites.d/")
    assert any(e.startswith("sites.d/b.example.com.toml:3: keep: ") for e in decls.errors)
    assert any(e.startswith("sites.d/d.example.com.toml:3: colour: unknown key") for e in decls.errors)
    assert any(e.startswith("sites.d/c.example.com.toml:2: ") for e in decls.errors)


def test_load_executable_file(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    file = declare(repo, "shop.example.com", commit=False)
    file.chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "exec")
    assert set(load(repo, "main").sites) == {"shop.example.com"}


def test_load_without_sites_d(tmp_path: Path) -> None:
    repo = tmp_path / "decl"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    decls = load(repo, "main")
    assert decls.commit == git(repo, "rev-parse", "HEAD")
    assert decls.sites == {}
    assert decls.invalid == {}


def test_load_removed_site_disappears(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "a.example.com")
    declare(repo, "b.example.com")
    git(repo, "rm", "-q", "sites.d/b.example.com.toml")
    git(repo, "commit", "-q", "-m", "remove b")
    assert set(load(repo, "main").sites) == {"a.example.com"}


@pytest.mark.parametrize("branch", ["missing", "feature/none"])
def test_load_missing_branch(tmp_path: Path, branch: str) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    with pytest.raises(DeclarationError):
        load(repo, branch)


def test_load_empty_repository(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    with pytest.raises(DeclarationError):
        load(repo, "main")


def test_load_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError):
        load(tmp_path / "nothing-here", "main")


# --------------------------------------------------------------------------- load_directory


def test_load_directory_accepts_sites_d_itself(tmp_path: Path) -> None:
    sites = tmp_path / "sites.d"
    sites.mkdir()
    (sites / "shop.example.com.toml").write_text(render({**BASE, "keep": 3}))
    (sites / "bad.example.com.toml").write_text(render({**BASE, "keep": "3"}))
    (sites / "ignored.txt").write_text("x")
    for path in (tmp_path, sites):
        decls = load_directory(path)
        assert decls.commit is None
        assert set(decls.sites) == {"shop.example.com"}
        assert decls.sites["shop.example.com"].keep == 3
        assert set(decls.invalid) == {"bad.example.com"}
        assert decls.invalid["bad.example.com"].errors[0].startswith("sites.d/bad.example.com.toml:3: keep: ")


def test_load_directory_reports_a_directory_named_like_a_site(tmp_path: Path) -> None:
    sites = tmp_path / "sites.d"
    (sites / "dir.example.com.toml").mkdir(parents=True)
    decls = load_directory(tmp_path)
    assert decls.sites == {}
    assert set(decls.invalid) == {"dir.example.com"}


def test_load_directory_oversized_file(tmp_path: Path) -> None:
    sites = tmp_path / "sites.d"
    sites.mkdir()
    (sites / "big.example.com.toml").write_bytes(render(BASE).encode() + b"#" * MAX_FILE_BYTES + b"\n")
    decls = load_directory(tmp_path)
    assert set(decls.invalid) == {"big.example.com"}
    assert decls.invalid["big.example.com"].errors[0].startswith("sites.d/big.example.com.toml:1: ")


# --- one site on many servers -------------------------------------------------------------------


def test_servers_list_names_every_target_and_fills_server() -> None:
    text = ('servers = ["web-1", "deploy@web-2:2222"]\nrepository = "/srv/app.git"\n'
            'script_once = "php artisan migrate --force"\n')
    site = parse(text)
    assert isinstance(site, SiteDeclaration)
    assert site.targets == ("web-1", "deploy@web-2:2222") and site.server == "web-1"
    assert site.script_once == "php artisan migrate --force"
    single = parse('server = "web-1"\nrepository = "/srv/app.git"\n')
    assert isinstance(single, SiteDeclaration) and single.targets == ("web-1",)


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ('server = "web-1"\nservers = ["web-2"]\n', "file", "either server or servers"),
    ('servers = ["web-1", "web-1"]\n', "servers", "more than once"),
    ("servers = []\n", "servers", "at least one"),
    ('servers = ["-oProxyCommand=x"]\n', "servers", "not a usable server"),
    ('servers = ["web-1", 2]\n', "servers", ""),
    ('servers = ["web-1"]\nscript_once = 1\n', "script_once", ""),
])
def test_servers_list_mistakes_are_reported_once(text: str, key: str, fragment: str) -> None:
    result = parse(text + 'repository = "/srv/app.git"\n')
    assert isinstance(result, InvalidSite)
    matches = errors_of(result)
    assert [m["key"] for m in matches] == [key], result.message
    assert fragment in result.message
