"""`reconciler validate [PATH]`: checks declarations without touching any server: a work tree
as files on disk (a pre-commit check), a bare repository at its tip; each problem is printed as
`file:line: key: message` and makes the exit status 1."""

from __future__ import annotations

import re
import subprocess

from tests.support import git
from tests.support.cli_world import DOMAIN, OTHER, CliWorld, tree
from tests.support.layers import write_defaults, write_template


def test_validate_a_valid_directory(world: CliWorld) -> None:
    world.declare()
    world.declare(OTHER, keep=3, php="8.3")
    rc, out, err = world.cli("validate", str(world.decl))
    assert rc == 0, (out, err)
    rc, out, err = world.cli("validate", str(world.decl / "sites.d"))
    assert rc == 0, (out, err)
    assert tree(world.base) == []


def test_validate_an_invalid_directory_prints_file_line_key_message(world: CliWorld) -> None:
    world.declare()
    (world.decl / "sites.d" / f"{OTHER}.toml").write_text(
        f'server = "local"\nrepository = "{world.app}"\ncolour = "blue"\nkeep = 0\n'
    )
    # Uncommitted: validate checks the files of a directory (a pre-commit check).
    rc, out, err = world.cli("validate", str(world.decl))
    assert rc == 1, (out, err)
    lines = out.splitlines()
    assert any(re.fullmatch(rf"sites\.d/{re.escape(OTHER)}\.toml:3: colour: .+", line) for line in lines), out
    assert any(re.fullmatch(rf"sites\.d/{re.escape(OTHER)}\.toml:4: keep: .+", line) for line in lines), out
    assert DOMAIN not in out.replace("1 valid", "")
    assert tree(world.base) == []


def test_validate_a_bare_repo_checks_the_committed_tip(world: CliWorld) -> None:
    world.declare()
    bare = world.tmp / "decl.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(world.decl), str(bare)], check=True)
    rc, out, err = world.cli("validate", str(bare))
    assert rc == 0, (out, err)

    # Commit an invalid declaration and push it: now the tip is invalid.
    world.declare(OTHER, keep=0)
    git(world.decl, "push", "-q", str(bare), "main")
    rc, out, err = world.cli("validate", str(bare))
    assert rc == 1, (out, err)
    assert re.search(rf"^sites\.d/{re.escape(OTHER)}\.toml:\d+: keep: .+$", out, re.MULTILINE), out

    # Without PATH: the configured repo (bare) at its tip.
    rc, out, err = world.cli("validate", repo=bare)
    assert rc == 1, (out, err)


def test_validate_reports_a_template_error_at_the_template_line_for_each_site_using_it(world: CliWorld) -> None:
    world.declare(OTHER)  # names no template: still valid
    write_template(world.decl, "laravel", '# Laravel\n\nphp = "8"\n', commit=False)
    world.declare(template="laravel", commit=False)
    rc, out, err = world.cli("validate", str(world.decl))
    assert rc == 1, (out, err)
    assert out.splitlines() == ["templates/laravel.toml:3: php: must look like 8.3", "1 valid, 1 invalid"], out
    write_defaults(world.decl, f'server = "local"\nbase_path = "{world.base}"\n', commit=False)
    (world.decl / "sites.d" / f"{OTHER}.toml").write_text(f'repository = "{world.app}"\n')  # the rest from defaults
    write_template(world.decl, "laravel", 'php = "8.3"\n', commit=False)
    rc, out, err = world.cli("validate", str(world.decl))
    assert (rc, out) == (0, "2 valid, 0 invalid\n"), (out, err)
