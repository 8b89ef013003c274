"""cli.why: what moved a deployed site, read against the declarations commit its live release
was asked for: each changed key named by the file that sets it now (a template, the defaults,
the site's own file); nothing for a site whose declaration is unchanged, one never deployed, or
one whose recorded commit is gone. Real passes on "local" sites, real git."""

from __future__ import annotations

import sqlite3

from reconciler.cli.invocation import Invocation
from reconciler.cli.why import reasons
from tests.support.cli_world import DOMAIN, OTHER, CliWorld
from tests.support.layers import write_defaults, write_template

THIRD = "docs.example.com"


def _invocation(world: CliWorld) -> Invocation:
    flags = world.flags()
    return Invocation(flags[-1], {"repo": world.decl, "state_dir": world.state})


def test_the_changed_keys_of_each_deployed_site_are_named_by_the_file_that_sets_them(world: CliWorld) -> None:
    write_template(world.decl, "laravel", 'script = "echo one"\n')
    world.declare(template="laravel")
    world.declare(OTHER, script="echo own\n")
    world.ok("reconcile")
    world.declare(THIRD)  # never deployed: nothing to compare with
    assert reasons(_invocation(world), [DOMAIN, OTHER, THIRD]) == {}
    write_template(world.decl, "laravel", 'script = "echo two"\n')
    write_defaults(world.decl, "\nkeep = 4\n")
    assert reasons(_invocation(world), [DOMAIN, OTHER, THIRD]) == {
        DOMAIN: ["template laravel changed: script (templates/laravel.toml:1)",
                 "defaults changed: keep (sites.d/_defaults.toml:2)"],
        OTHER: ["defaults changed: keep (sites.d/_defaults.toml:2)"],
    }
    assert reasons(_invocation(world), []) == {}


def test_a_recorded_commit_that_is_gone_gives_no_reason(world: CliWorld) -> None:
    world.declare(script="echo one\n")
    world.ok("reconcile")
    world.declare(script="echo two\n")
    with sqlite3.connect(world.state / "reconciler.db") as db:
        db.execute("update deployments set declarations_commit = ?", ["0" * 40])
    assert reasons(_invocation(world), [DOMAIN]) == {}
