"""`reconciler show D [--json]`: prints a site's effective declaration - its own keys over its
template over `sites.d/_defaults.toml` - as TOML that reads back to the same values, each key
with the file and line that set it (`# from templates/laravel.toml:2`) or `# default`; `--json`
gives the same as data. An invalid site prints its errors (at the file and line that set the
bad key) and exits 1, an undeclared one exits 1. Sites on "local", real git repositories."""

from __future__ import annotations

import json
import tomllib

from tests.support.cli_world import DOMAIN, OTHER, CliWorld
from tests.support.layers import write_defaults, write_template

LARAVEL = '# Laravel sites\nphp = "8.3"\nscript = """\ncomposer install\n"""\n[health]\ncommand = "true"\n'


def _fleet(world: CliWorld) -> None:
    write_defaults(world.decl, f'base_path = "{world.base}"\nkeep = 5\n')
    write_template(world.decl, "laravel", LARAVEL)
    world.declare(raw=f'server = "local"\nrepository = "{world.app}"\ntemplate = "laravel"\nkeep = 3\n')


def _noted(out: str) -> dict[str, str]:
    """Each `key = ...  # note` line's note, by key (a table's by its name)."""
    notes = {}
    for line in out.splitlines():
        if "#" in line and not line.startswith("#"):
            head, _, note = line.rpartition(" # ")
            key = head.strip().strip('"').split("=")[0].strip().strip("[]")
            notes[key or "script"] = note
    return notes


def test_show_prints_each_effective_key_with_the_file_and_line_that_set_it(world: CliWorld) -> None:
    _fleet(world)
    out = world.ok("show", DOMAIN)
    notes = _noted(out)
    assert notes["template"] == f"from sites.d/{DOMAIN}.toml:3"
    assert notes["keep"] == f"from sites.d/{DOMAIN}.toml:4"  # the site's own key wins over the defaults'
    assert notes["base_path"] == "from sites.d/_defaults.toml:1"
    assert notes["php"] == "from templates/laravel.toml:2"
    assert notes["script"] == "from templates/laravel.toml:3"
    assert notes["health"] == "from templates/laravel.toml:6"
    assert notes["shared"] == "default" and notes["branch"] == "default"
    # What it prints is the declaration itself: TOML that reads back to the effective values.
    values = tomllib.loads(out)
    assert values["keep"] == 3 and values["php"] == "8.3" and values["script"] == "composer install\n"
    assert values["health"]["command"] == "true" and values["base_path"] == str(world.base)
    assert values["domain"] == DOMAIN and "server" in values and "servers" not in values


def test_show_json_gives_values_and_origins(world: CliWorld) -> None:
    _fleet(world)
    shown = json.loads(world.ok("show", DOMAIN, "--json"))
    assert shown["domain"] == DOMAIN and shown["commit"] == world.tip()
    assert shown["declaration"]["script"] == "composer install\n" and shown["declaration"]["keep"] == 3
    assert shown["origins"]["script"] == {"file": "templates/laravel.toml", "line": 3}
    assert shown["origins"]["base_path"] == {"file": "sites.d/_defaults.toml", "line": 1}
    assert shown["origins"]["shared"] is None  # the model's default


def test_show_of_an_invalid_site_prints_its_errors_at_the_template_line(world: CliWorld) -> None:
    _fleet(world)
    write_template(world.decl, "laravel", LARAVEL.replace('"8.3"', '"eight"'))
    rc, out, err = world.cli("show", DOMAIN)
    assert rc == 1 and out == ""
    assert "templates/laravel.toml:2: php: must look like 8.3" in err
    rc, out, err = world.cli("show", OTHER)
    assert rc == 1 and f"{OTHER}: no such site declared" in err
