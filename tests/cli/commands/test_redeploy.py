"""`reconciler redeploy D [--no-wait]`: builds the site's current commit again as a fresh
release (a new name, the same commit), now or, with --no-wait, at the next pass; a pinned site
has nothing to build (exit 1). Sites use `server = "local"`; the CLI runs in this process."""

from __future__ import annotations

from tests.support.cli_world import DOMAIN, CliWorld


def test_redeploy_builds_the_same_commit_as_a_fresh_release(world: CliWorld) -> None:
    (commit,) = world.deploy_n(1)
    (first,) = world.releases()
    rc, out, err = world.cli("redeploy", DOMAIN)
    assert rc == 0, (out, err)
    assert out.startswith(f"{DOMAIN}: a fresh build of the current commit is requested; building now\n"), out
    old, new = world.releases()
    assert old == first and world.active() == new
    newest = world.history()[0]
    assert newest["commit_sha"] == commit and newest["release"] == new and newest["trigger"] == "redeploy"


def test_redeploy_no_wait_leaves_the_build_to_the_next_pass(world: CliWorld) -> None:
    world.deploy_n(1)
    before = world.releases()
    world.ok("redeploy", DOMAIN, "--no-wait")
    assert world.releases() == before
    world.ok("reconcile")
    assert len(world.releases()) == 2


def test_a_pinned_site_has_nothing_to_redeploy(world: CliWorld) -> None:
    world.deploy_n(2)
    world.ok("rollback", DOMAIN)
    world.ok("reconcile")
    before = world.releases()
    rc, out, err = world.cli("redeploy", DOMAIN)
    assert rc == 1 and "unpin it first" in err, (out, err)
    assert world.releases() == before
