"""reconciler.core.declaration_files: how one `sites.d/*.toml` file's bytes become a site or that
file's errors (`file:line: key: message`, with the line of each key; a file too large, not UTF-8,
nested too deep or not TOML is refused whole), and how a commit's files are gathered into
`Declarations`, directly and through the loaders of engine.source that read them from real git
repositories and directories."""

from __future__ import annotations

import pytest

from reconciler.core.declaration_files import assemble, collect, parse_file, parse_site, read_layers
from reconciler.core.declarations import (
    MAX_ERRORS,
    MAX_FILE_BYTES,
    MAX_NESTING,
    InvalidSite,
    SiteDeclaration,
    refuse_local,
)
from reconciler.core.layers import Layers
from tests.support.site_text import BASE, DOMAIN, FILE, assert_invalid, errors_of, line_of, parse, render

# --------------------------------------------------------------------------- one file, refused whole


def test_brackets_in_strings_and_comments_do_not_count_as_nesting() -> None:
    inside = "[" * (MAX_NESTING + 5)
    text = render(BASE) + f'script = "{inside}"  # {inside}\nshared = {"[" * MAX_NESTING}{"]" * MAX_NESTING}\n'
    result = parse(text)
    # Not refused for nesting: the only complaint is the shape of `shared` (lists of lists).
    assert isinstance(result, InvalidSite)
    assert [m["key"] for m in errors_of(result)] == ["shared"]


def test_nesting_one_past_the_limit_is_refused_before_parsing() -> None:
    deep = "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)
    result = parse(render(BASE) + f"shared = {deep}\n")
    assert isinstance(result, InvalidSite)
    assert result.errors == (f"{FILE}:1: file: nested deeper than {MAX_NESTING} levels",)


def test_an_absurdly_dotted_key_is_refused_naming_its_line_and_first_part() -> None:
    key = ".".join(["deploy"] + ["x"] * (MAX_NESTING + 1))
    result = parse(render(BASE) + f"{key} = 1\n")
    assert isinstance(result, InvalidSite)
    assert result.errors == (f"{FILE}:3: deploy: dotted key deeper than {MAX_NESTING} parts",)


def test_errors_past_the_limit_are_summarised_in_one_line() -> None:
    text = render(BASE) + "".join(f"unknown{n} = 1\n" for n in range(MAX_ERRORS + 7))
    result = parse(text)
    assert isinstance(result, InvalidSite)
    assert len(result.errors) == MAX_ERRORS + 1
    assert result.errors[MAX_ERRORS - 1].startswith(f"{FILE}:{MAX_ERRORS + 2}: unknown{MAX_ERRORS - 1}: ")
    assert result.errors[-1] == f"{FILE}: ... and 7 more errors"


def test_a_key_of_a_table_is_named_in_full_at_its_own_line() -> None:
    text = render(BASE) + '\n[health]\nurl = "http://localhost/"\ncolour = 1\n'
    result = parse(text)
    assert isinstance(result, InvalidSite)
    assert result.errors == (f"{FILE}:6: health.colour: unknown key",)


def test_a_bad_value_inside_a_table_points_at_its_key_not_the_header() -> None:
    text = ('server = "web-1"\nrepository = "/srv/git/blog.git"\nscript = """\ncomposer install\nretries = 1\n"""\n'
            '[health]\nurl = "http://localhost/"\n# tries\nretries = "three"\n')
    result = parse(text)
    assert isinstance(result, InvalidSite)
    assert len(result.errors) == 1 and result.errors[0].startswith(f"{FILE}:10: health.retries: "), result.errors


def test_a_table_key_written_dotted_or_inline_points_at_its_line() -> None:
    dotted = parse('server = "web-1"\nrepository = "/r"\n\nhealth.url = "http://localhost/"\nhealth.retries = "x"\n')
    assert isinstance(dotted, InvalidSite) and dotted.errors[0].startswith(f"{FILE}:5: health.retries: "), dotted
    inline = parse('server = "web-1"\nrepository = "/r"\nhealth = { url = "http://localhost/", retries = "x" }\n')
    assert isinstance(inline, InvalidSite) and inline.errors[0].startswith(f"{FILE}:3: health.retries: "), inline


def test_a_control_character_in_a_file_name_is_escaped_in_every_message() -> None:
    result = parse_site("sites.d/a\x1b[2Jb.example.com.toml", b"keep = = 1\n")
    assert isinstance(result, InvalidSite)
    assert "\x1b" not in result.file + result.message and "\\x1b" in result.message


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


# --------------------------------------------------------------------------- a commit's files gathered


def test_a_path_that_is_not_a_regular_file_is_invalid_and_never_read() -> None:
    found, line = parse_file("sites.d/alias.example.com.toml", None)
    assert line == 0
    assert isinstance(found, InvalidSite) and found.domain == "alias.example.com"
    assert found.errors == ("sites.d/alias.example.com.toml:1: file: symlinks, directories and special files "
                            "are not allowed",)


def test_the_line_of_server_is_kept_only_for_a_site_on_the_local_host() -> None:
    local = render({"repository": "/srv/git/shop.git", "keep": 3}) + '\n# why\nserver = "local"\n'
    found, line = parse_file("sites.d/a.example.com.toml", local.encode())
    assert isinstance(found, SiteDeclaration) and line == line_of(local, "server") == 5
    remote = render({**BASE, "server": "web-1"}).encode()
    assert parse_file("sites.d/a.example.com.toml", remote)[1] == 0
    assert parse_file("sites.d/a.example.com.toml", b"keep = = 1\n")[1] == 0


def test_collect_sorts_each_file_into_sites_or_invalid_whatever_the_order() -> None:
    files = [
        ("sites.d/z.example.com.toml", render({**BASE, "server": "web-2"}).encode()),
        ("sites.d/b.example.com.toml", render({**BASE, "keep": 0}).encode()),
        ("sites.d/a.example.com.toml", render(BASE).encode()),
        ("sites.d/c.example.com.toml", None),
    ]
    decls = collect(files, "c0ffee")
    assert decls.commit == "c0ffee"
    assert list(decls.sites) == ["a.example.com", "z.example.com"]
    assert list(decls.invalid) == ["b.example.com", "c.example.com"]
    assert decls.local_lines == {"a.example.com": 1}
    assert decls.errors[0].startswith("sites.d/b.example.com.toml:3: keep: ")
    assert collect(reversed(files), "c0ffee") == decls


def test_assemble_takes_results_already_parsed() -> None:
    parsed = [(name, parse_file(name, render(BASE).encode())) for name in ("sites.d/b.example.com.toml",
                                                                           "sites.d/a.example.com.toml")]
    decls = assemble(parsed, None)
    assert decls.commit is None and list(decls.sites) == ["a.example.com", "b.example.com"]


# --------------------------------------------------------------------------- defaults and templates

LARAVEL = (b'# Laravel sites\nrepository = "/srv/git/app.git"\nphp = "8.3"\nscript = "composer install"\n'
           b'[health]\ncommand = "true"\n')


def _layered(defaults: bytes | bool | None = False, laravel: bytes = LARAVEL) -> Layers:
    return read_layers(defaults, [("templates/laravel.toml", laravel)])


def test_a_site_takes_the_keys_it_lacks_from_its_template_and_the_defaults() -> None:
    layers = _layered(b'server = "web-1"\nkeep = 5\n')
    site = parse_site(FILE, b'template = "laravel"\nkeep = 3\n', layers)
    assert isinstance(site, SiteDeclaration)
    assert (site.server, site.repository, site.php, site.keep, site.template) == (
        "web-1", "/srv/git/app.git", "8.3", 3, "laravel")
    assert site.health is not None and site.health.command == "true"
    assert site.build_key == parse_site(FILE, b'server = "web-1"\nrepository = "/srv/git/app.git"\n'
                                              b'script = "composer install"\n').build_key  # type: ignore[union-attr]


def test_an_error_in_a_template_is_reported_at_the_template_line_for_the_site_using_it() -> None:
    layers = _layered(laravel=LARAVEL.replace(b'"8.3"', b'"eight"').replace(b'"true"', b'""'))
    result = parse_site(FILE, b'server = "web-1"\ntemplate = "laravel"\n', layers)
    assert isinstance(result, InvalidSite) and result.file == FILE
    assert set(result.errors) == {"templates/laravel.toml:3: php: must look like 8.3",
                                  "templates/laravel.toml:6: health.command: must be non-empty shell code of at "
                                  "most 4096 characters, no NUL"}


def test_a_bad_template_makes_its_sites_invalid_and_leaves_the_others_alone() -> None:
    layers = _layered(laravel=b"php = = 1\n")
    files = [("sites.d/a.example.com.toml", b'server = "web-1"\ntemplate = "laravel"\n'),
             ("sites.d/b.example.com.toml", render(BASE).encode())]
    decls = collect(files, None, layers)
    assert list(decls.sites) == ["b.example.com"] and list(decls.invalid) == ["a.example.com"]
    assert decls.invalid["a.example.com"].errors[0].startswith("templates/laravel.toml:1: file: ")


def test_a_bad_defaults_file_makes_every_site_invalid_at_its_line() -> None:
    layers = _layered(b'keep = 1\nkeep_failed = -1\n')
    files = [(f"sites.d/{name}.example.com.toml", render(BASE).encode()) for name in ("a", "b")]
    decls = collect(files, None, layers)
    assert not decls.sites
    assert [site.errors for site in decls.invalid.values()] == [
        ("sites.d/_defaults.toml:2: keep_failed: must be 0 or more",)] * 2
    unreadable = collect(files, None, read_layers(None, []))  # a symlink: never followed
    assert all("sites.d/_defaults.toml:1: file: symlinks" in site.message for site in unreadable.invalid.values())


def test_a_site_naming_a_missing_template_is_invalid_with_a_clear_message() -> None:
    result = parse_site(FILE, render(BASE).encode() + b'template = "symfony"\n', _layered())
    assert isinstance(result, InvalidSite)
    assert result.errors == (f"{FILE}:3: template: no template 'symfony': templates/symfony.toml does not exist",)


def test_each_valid_site_keeps_the_origin_of_each_key_and_local_is_refused_where_it_was_set() -> None:
    layers = _layered(b'\nserver = "local"\n')
    decls = collect([(FILE, b'template = "laravel"\n')], "c0ffee", layers)
    origins = decls.origins[DOMAIN]
    assert str(origins["server"]) == "sites.d/_defaults.toml:2" and str(origins["php"]) == "templates/laravel.toml:3"
    assert str(origins["template"]) == f"{FILE}:1"
    refused = refuse_local(decls, allow_local=False)
    assert refused.invalid[DOMAIN].errors[0].startswith("sites.d/_defaults.toml:2: server: ")
    assert refused.invalid[DOMAIN].file == FILE and DOMAIN not in refused.origins
