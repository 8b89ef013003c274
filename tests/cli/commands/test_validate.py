"""`reconciler validate [PATH]`: checks declarations without touching any server: a work tree
as files on disk (a pre-commit check), a bare repository at its tip; each problem is printed as
`file:line: key: message` and makes the exit status 1."""

from __future__ import annotations

import re
import subprocess

from tests.support import git
from tests.support.cli_world import DOMAIN, OTHER, CliWorld, tree


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
