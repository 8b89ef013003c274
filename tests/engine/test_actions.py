"""`reconciler retry D` and `reconciler redeploy D`: imperative actions that change
what the reconciler remembers or asks of the next pass, never the declarations.

A failure is remembered per (commit, script+shared), so a transient cause (a package mirror down)
left the site Failed until someone pushed a change; `retry` forgets it and builds. A successful
build satisfies the head forever, so a `.env` change never reached a running release; `redeploy`
builds the same commit again as a fresh release. Both are recorded in history with who asked.
Sites on "local", the CLI in this process, real git and a real state database.

Rollback is refused when it would do nothing or could not work, decided from
fresh server facts, not from the database: pinning the active release would freeze the site
without moving it, and a release removed from the server (by hand or by another reconciler's
prune) cannot be switched to even though history still lists it. Both exit 1, name the reason,
and commit nothing; an unknown site is an error too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconciler.cli.person import person
from tests.support import World, app_commit, git, neutral_world

DOMAIN = "shop.example.com"


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return neutral_world(tmp_path, monkeypatch)  # its config opts in to local sites


def test_retry_builds_again_after_a_transient_failure_and_says_who_asked(world: World, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror-up"
    world.declare(script=f"test -e {mirror} || {{ echo 'package mirror unreachable'; exit 3; }}\necho built\n")
    assert world.run_cli("reconcile").rc == 1
    tip = world.tip()
    # The failure is remembered: another pass does not rebuild (no hot loop).
    assert world.run_cli("reconcile").rc == 1
    assert len(world.releases()) == 1 and world.active() is None

    mirror.touch()  # the cause goes away; nothing in git changes
    rc, out, err = world.run_cli("retry", DOMAIN)
    assert rc == 0, (out, err)
    assert "forgot 1 remembered failure" in out and f"{DOMAIN}: Synced/Healthy" in out
    assert world.tip() == tip, "retry must not commit"
    newest, failed = world.history_rows()[:2]
    assert newest["status"] == "success" and newest["is_active"]
    assert newest["trigger"] == "retry" and newest["requested_by"] == person()
    assert failed["status"] == "failed" and "exit 3" in failed["message"] and failed["exit_status"] == 3

    # Nothing remembered any more: retry says so and changes nothing.
    rc, out, err = world.run_cli("retry", DOMAIN)
    assert rc == 1 and "nothing to retry" in err, (out, err)


def test_a_retried_build_that_fails_again_is_remembered_again(world: World) -> None:
    world.declare(script="exit 4\n")
    assert world.run_cli("reconcile").rc == 1
    rc, out, err = world.run_cli("retry", DOMAIN)
    assert rc == 1 and "Failed" in out, (out, err)
    assert len(world.releases()) == 2
    assert world.run_cli("reconcile").rc == 1
    assert len(world.releases()) == 2, "the second failure must be remembered like the first"


def test_redeploy_builds_the_same_commit_as_a_fresh_release(world: World) -> None:
    world.declare(script="echo built\n")
    assert world.run_cli("reconcile").rc == 0
    first = world.active()
    assert world.run_cli("reconcile").rc == 0 and world.active() == first  # a build exists: nothing to do

    rc, out, err = world.run_cli("redeploy", DOMAIN)
    assert rc == 0, (out, err)
    second = world.active()
    assert second is not None and second != first
    newest, previous = world.history_rows()[:2]
    assert newest["release"] == second and newest["commit_sha"] == previous["commit_sha"]
    assert newest["trigger"] == "redeploy" and newest["requested_by"] == person()
    # History says what was built: the app commit's subject and author, read on the server.
    assert newest["commit_subject"] == git(world.app, "log", "-1", "--format=%s")
    assert newest["commit_author"] == git(world.app, "log", "-1", "--format=%an <%ae>")
    # Answered: the next pass has nothing to do.
    assert world.run_cli("reconcile").rc == 0 and world.active() == second


def test_redeploy_no_wait_leaves_the_build_to_the_next_pass(world: World) -> None:
    world.declare(script="echo built\n")
    assert world.run_cli("reconcile").rc == 0
    first = world.active()
    rc, out, err = world.run_cli("redeploy", "--no-wait", DOMAIN)
    assert rc == 0 and world.active() == first, (out, err)
    assert world.run_cli("reconcile").rc == 0
    assert world.active() != first and world.history_rows()[0]["trigger"] == "redeploy"


def test_redeploy_of_a_pinned_site_and_of_an_unknown_site_is_refused(world: World) -> None:
    world.declare(script="echo built\n")
    assert world.run_cli("reconcile").rc == 0
    active = world.active()
    world.declare(script="echo built\n", pin=active)
    assert world.run_cli("reconcile").rc == 0
    rc, out, err = world.run_cli("redeploy", DOMAIN)
    assert rc == 1 and "pinned" in err and world.active() == active, (out, err)
    for command in ("retry", "redeploy"):
        rc, out, err = world.run_cli(command, "nope.example.com")
        assert rc == 1 and "no such site declared" in err, (out, err)


def test_a_deploy_start_is_logged_with_its_trigger(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's log says when a deploy starts, and why."""
    world.declare(script="echo built\n")
    with caplog.at_level("INFO", logger="reconciler"):
        assert world.run_cli("reconcile").rc == 0
        assert world.run_cli("redeploy", DOMAIN).rc == 0
    starts = [r.getMessage() for r in caplog.records if "deploying" in r.getMessage()]
    assert len(starts) == 2, starts
    assert starts[0].startswith(f"{DOMAIN}: deploying ") and starts[0].endswith("(first deploy)")
    assert starts[1].endswith(f"(redeploy, asked by {person()})"), starts[1]


@pytest.fixture(name="two_releases")
def two_releases_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
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


def test_rollback_to_the_active_release_is_refused(two_releases: World) -> None:
    world = two_releases
    active = world.active()
    assert active is not None
    err = _refused(world, "rollback", DOMAIN, active)
    assert "already the active release" in err and active in err


def test_rollback_to_a_release_removed_from_the_server_is_refused(two_releases: World) -> None:
    world = two_releases
    active = world.active()
    older = next(r for r in world.releases() if r != active)
    shutil.rmtree(world.deployments() / older)  # gone from the server; history still lists it
    err = _refused(world, "rollback", DOMAIN, older)
    assert f"release {older} is not on local" in err
    # ... and the default target (the newest older successful release) is gone too.
    err = _refused(world, "rollback", DOMAIN)
    assert "no successful release older than the active one" in err


def test_rollback_to_an_older_release_on_the_server_commits_the_pin(two_releases: World) -> None:
    world = two_releases
    active = world.active()
    older = next(r for r in world.releases() if r != active)
    rc, out, err = world.run_cli("rollback", DOMAIN)
    assert rc == 0 and older in out, (out, err)
    assert f'pin = "{older}"' in git(world.decl, "show", f"main:sites.d/{DOMAIN}.toml")


def test_rollback_and_unpin_of_an_unknown_site_are_errors(two_releases: World) -> None:
    world = two_releases
    for command in ("rollback", "unpin"):
        err = _refused(world, command, "nope.example.com")
        assert "nope.example.com: no such site declared" in err
