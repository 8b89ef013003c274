"""`reconciler unpin D`: commits the removal of a site's pin (in a work tree or a bare
repository); the next pass goes back to the branch head. Unpinned or unknown: exit 1, nothing
committed."""

from __future__ import annotations

import subprocess
import tomllib

from tests.support import app_commit, git
from tests.support.cli_world import DOMAIN, CliWorld


def test_rollback_and_unpin_in_a_bare_declarations_repo(world: CliWorld) -> None:
    world.declare(script="echo ok\n")
    bare = world.tmp / "decl.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(world.decl), str(bare)], check=True)
    world.ok("reconcile", repo=bare)
    app_commit(world.app, "v2")
    world.ok("reconcile", repo=bare)
    old, new = world.releases()
    tip = world.tip(bare)

    rc, out, err = world.cli("rollback", DOMAIN, repo=bare)
    assert rc == 0, (out, err)
    assert git(bare, "rev-parse", "main^") == tip
    assert tomllib.loads(world.committed(repo=bare))["pin"] == old
    world.ok("reconcile", repo=bare)
    assert world.active() == old

    rc, out, err = world.cli("unpin", DOMAIN, repo=bare)
    assert rc == 0, (out, err)
    assert "pin" not in tomllib.loads(world.committed(repo=bare))
    world.ok("reconcile", repo=bare)
    assert world.active() == new
    assert world.releases() == [old, new]


def test_unpin_removes_the_pin_and_fails_when_unpinned(world: CliWorld) -> None:
    world.deploy_n(2)
    old, _ = world.releases()
    world.ok("rollback", DOMAIN)
    assert tomllib.loads(world.committed())["pin"] == old
    tip = world.tip()

    rc, out, err = world.cli("unpin", DOMAIN)
    assert rc == 0, (out, err)
    assert git(world.decl, "rev-parse", "main^") == tip
    assert "pin" not in tomllib.loads(world.committed())
    assert git(world.decl, "status", "--porcelain") == ""

    tip = world.tip()
    rc, out, err = world.cli("unpin", DOMAIN)
    assert rc == 1, (out, err)
    assert world.tip() == tip
    rc, out, err = world.cli("unpin", "nope.example.com")
    assert rc == 1, (out, err)
    assert world.tip() == tip
