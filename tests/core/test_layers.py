"""reconciler.core.layers: a site's effective keys are `_defaults.toml`, then its template, then
its own file, per top-level key (a table such as `[health]` replaced whole, alternatives such as
`branch`/`tag`/`commit` or `server`/`servers` replacing each other as a group), each key with the
file and line that set it; a template that does not exist, a template named by a template or the
defaults, and `domain`/`pin` outside a site's own file are errors at their file and line; and
`explain` names what changed in a declaration by the file that sets it now."""

from __future__ import annotations

from reconciler.core.layers import Layers, Origin, Source, check_template_name, explain, merge

SITE = "sites.d/shop.example.com.toml"
DEFAULTS = "sites.d/_defaults.toml"
LARAVEL = "templates/laravel.toml"


def _source(file: str, **values: object) -> Source:
    """A file read: each key on its own line, in order."""
    return Source(file, values, {(key,): n for n, key in enumerate(values, 1)})


def _layers(**template: object) -> Layers:
    return Layers(_source(DEFAULTS, server="web-1", keep=10, php="8.1"),
                  {"laravel": _source(LARAVEL, php="8.3", script="composer install\n", health={"url": "http://x/up"})})


def test_the_site_wins_over_its_template_which_wins_over_the_defaults() -> None:
    site = _source(SITE, repository="r", template="laravel", keep=3)
    found = merge(site, _layers())
    assert found.errors == []
    assert found.values == {"server": "web-1", "keep": 3, "php": "8.3", "script": "composer install\n",
                            "health": {"url": "http://x/up"}, "repository": "r", "template": "laravel"}
    assert found.origins["keep"] == Origin(SITE, 3)
    assert found.origins["php"] == Origin(LARAVEL, 1)
    assert found.origins["server"] == Origin(DEFAULTS, 1)
    assert str(found.origins["script"]) == f"{LARAVEL}:2"
    assert found.template == "laravel"


def test_a_table_is_replaced_whole_never_merged_key_by_key() -> None:
    site = _source(SITE, template="laravel", health={"command": "true"})
    found = merge(site, _layers())
    assert found.values["health"] == {"command": "true"}  # no `url` inherited beside it
    assert found.origins["health"] == Origin(SITE, 2)


def test_alternatives_replace_each_other_as_a_group_across_files_not_within_one() -> None:
    layers = Layers(_source(DEFAULTS, server="web-1", branch="production"))
    found = merge(_source(SITE, servers=["a", "b"], tag="v1"), layers)
    assert "server" not in found.values and "branch" not in found.values
    assert found.values["servers"] == ["a", "b"] and found.values["tag"] == "v1"
    # Both of a group in one file stay: the model reports that file's mistake.
    both = merge(_source(SITE, server="a", servers=["b"]), layers)
    assert both.values["server"] == "a" and both.values["servers"] == ["b"]


def test_an_unknown_or_badly_named_template_is_an_error_at_the_site_line() -> None:
    found = merge(_source(SITE, repository="r", template="symfony"), _layers())
    assert found.errors == [f"{SITE}:2: template: no template 'symfony': templates/symfony.toml does not exist"]
    bad = merge(_source(SITE, template="../etc/passwd"), _layers())
    assert bad.errors[0].startswith(f"{SITE}:1: template: must be 1-64 of [a-z0-9_-]")
    assert merge(_source(SITE, template=3), _layers()).errors == [f"{SITE}:1: template: must be a string"]


def test_domain_pin_and_template_belong_to_a_site_file_alone() -> None:
    layers = Layers(_source(DEFAULTS, pin="01012026-000000"),
                    {"laravel": _source(LARAVEL, domain="x.example.com", template="base")})
    found = merge(_source(SITE, template="laravel"), layers)
    assert found.errors == [
        f"{DEFAULTS}:1: pin: not allowed in the defaults: only a site's own file may set it",
        f"{LARAVEL}:1: domain: not allowed in a template: only a site's own file may set it",
        f"{LARAVEL}:2: template: not allowed in a template: only a site's own file may set it",
    ]
    assert "pin" not in found.values and "domain" not in found.values


def test_a_layer_that_cannot_be_read_is_its_own_errors_for_every_site_using_it() -> None:
    broken = Source(LARAVEL, errors=(f"{LARAVEL}:4: file: Expected '=' after a key (at line 4, column 5)",))
    layers = Layers(None, {"laravel": broken})
    assert merge(_source(SITE, template="laravel"), layers).errors == list(broken.errors)
    assert merge(_source(SITE, repository="r"), layers).errors == []  # a site not using it


def test_the_line_of_a_nested_key_is_read_from_the_file_that_set_its_table() -> None:
    template = Source(LARAVEL, {"health": {"timeout": 0}}, {("health",): 5, ("health", "timeout"): 7})
    found = merge(_source(SITE, template="laravel"), Layers(None, {"laravel": template}))
    assert found.line(["health", "timeout"]) == (LARAVEL, 7)
    assert found.line(["branch"]) is None


def test_template_names_are_plain_file_stems() -> None:
    assert check_template_name("laravel-11_api") is None
    for bad in ("", "Laravel", "-x", "a/b", "a.b", "x" * 65):
        assert check_template_name(bad) is not None, bad


def test_explain_names_each_changed_key_by_the_file_that_sets_it_now() -> None:
    origins = {"script": Origin(LARAVEL, 3), "keep": Origin(DEFAULTS, 2), "php": Origin(SITE, 4),
               "template": Origin(SITE, 2)}
    old = {"script": "a", "keep": 1, "php": "8.2", "shared": ["x"], "template": None, "branch": "main"}
    new = {"script": "b", "keep": 2, "php": "8.3", "shared": ["storage"], "template": "laravel", "branch": "main"}
    assert explain(old, new, origins) == [
        f"template laravel changed: script ({LARAVEL}:3)",
        f"defaults changed: keep ({DEFAULTS}:2)",
        f"php changed ({SITE}:4)",
        "shared changed (now the default)",
        "template: none -> laravel",
    ]
    assert explain(new, new, origins) == []
