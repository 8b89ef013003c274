"""Rollback is refused when it would do nothing or could not work (issue 11 item 1), decided from
fresh server facts, not from the database: pinning the active release would freeze the site
without moving it, and a release removed from the server (by hand or by another reconciler's
prune) cannot be switched to even though history still lists it. Both exit 1, name the reason,
and commit nothing; an unknown site is an error too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import World, app_commit, git, neutral_world

DOMAIN = "shop.example.com"


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = neutral_world(tmp_path, monkeypatch)
    world.declare(script="echo built\n")
    for n in range(2):
        if n:
            app_commit(world.app, f"v{n + 1}")
        rc, out, err = world.run_cli("reconcile")
        assert rc == 0, (out, err)
    return world


def _refused(world: World, *args: str) -> str:
    tip = world.tip()
    rc, out, err = world.run_cli(*args)
    assert rc == 1, (out, err)
    assert world.tip() == tip, "a refused command must commit nothing"
    return err


def test_rollback_to_the_active_release_is_refused(world: World) -> None:
    active = world.active()
    assert active is not None
    err = _refused(world, "rollback", DOMAIN, active)
    assert "already the active release" in err and active in err


def test_rollback_to_a_release_removed_from_the_server_is_refused(world: World) -> None:
    active = world.active()
    older = next(r for r in world.releases() if r != active)
    shutil.rmtree(world.deployments() / older)  # gone from the server; history still lists it
    err = _refused(world, "rollback", DOMAIN, older)
    assert f"release {older} is not on local" in err
    # ... and the default target (the newest older successful release) is gone too.
    err = _refused(world, "rollback", DOMAIN)
    assert "no successful release older than the active one" in err


def test_rollback_to_an_older_release_on_the_server_commits_the_pin(world: World) -> None:
    active = world.active()
    older = next(r for r in world.releases() if r != active)
    rc, out, err = world.run_cli("rollback", DOMAIN)
    assert rc == 0 and older in out, (out, err)
    assert f'pin = "{older}"' in git(world.decl, "show", f"main:sites.d/{DOMAIN}.toml")


def test_rollback_and_unpin_of_an_unknown_site_are_errors(world: World) -> None:
    for command in ("rollback", "unpin"):
        err = _refused(world, command, "nope.example.com")
        assert "nope.example.com: no such site declared" in err
