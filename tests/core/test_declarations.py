"""Table-driven tests of reconciler.core.declarations: every rule of SPEC §2, valid and invalid,
each error naming its key and line. (How a file becomes a site or its errors, and how a commit's
files are gathered, is tests/core/test_declaration_files.py.)"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import (
    DEFAULT_SHARED,
    InvalidSite,
    SiteDeclaration,
    printable,
)
from reconciler.remote.transport.ssh import parse_destination
from tests.support.site_text import BASE, DOMAIN, FILE, assert_invalid, errors_of, line_of, parse, parse_fields, render

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
        ({"copy_from_previous": ["vendor"]}, True),
        ({"copy_from_previous": ["node_modules"], "shared": ["storage", ".env", "vendor"]}, True),
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


def test_copied_paths_are_not_shared() -> None:
    """A path copied from the previous release is taken out of `shared`, the default list or the
    site's own, so `copy_from_previous = ["vendor"]` alone stops sharing vendor/."""
    site = parse_fields(copy_from_previous=["vendor", "node_modules"])
    assert isinstance(site, SiteDeclaration), site
    assert (site.shared, site.copy_from_previous) == (["storage", ".env"], ["vendor", "node_modules"])
    own = parse_fields(copy_from_previous=["vendor"], shared=["vendor", "storage"])
    assert isinstance(own, SiteDeclaration), own
    assert own.shared == ["storage"]


def test_a_copied_path_may_not_hold_a_shared_one() -> None:
    """Copying public/ would replace the shared public/uploads link with a copy: refused."""
    text = render({**BASE, "shared": ["public/uploads"], "copy_from_previous": ["public"]})
    assert_invalid(parse(text), "copy_from_previous", line_of(text, "copy_from_previous"),
                   "overlaps shared entry 'public/uploads'")


def test_a_site_without_copy_from_previous_keeps_its_build_key() -> None:
    """The key only enters the build key when set: no existing site rebuilds after an upgrade."""
    site = parse_fields(script="composer install\n")
    assert isinstance(site, SiteDeclaration), site
    payload = json.dumps({"script": "composer install\n", "shared": list(DEFAULT_SHARED)}, sort_keys=True)
    assert site.copy_from_previous == [] and site.build_key == hashlib.sha256(payload.encode()).hexdigest()[:16]


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
        # copy_from_previous: paths inside the release, like shared; never inside a shared one
        ("copy_from_previous", "vendor", "list"),
        ("copy_from_previous", [""], "non-empty relative path"),
        ("copy_from_previous", ["/srv/vendor"], "non-empty relative path"),
        ("copy_from_previous", ["../vendor"], "'..'"),
        ("copy_from_previous", ["app/../../x"], "'..'"),
        ("copy_from_previous", ["-rf"], "start with '-'"),
        ("copy_from_previous", ["vendor", "vendor"], "listed twice"),
        ("copy_from_previous", ["vendor", "vendor/bin"], "overlap"),
        ("copy_from_previous", ["storage/framework"], "overlaps shared entry 'storage'"),
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
