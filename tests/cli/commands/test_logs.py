"""`reconciler logs D [ID]`: the output of a site's latest deployment, or of the one named by
ID (never another site's), kept after its release is pruned."""

from __future__ import annotations

from tests.support.cli_world import DOMAIN, OTHER, CliWorld


def test_logs_exit_codes_and_ids(world: CliWorld) -> None:
    world.declare(script="echo first-build\n")
    world.declare(OTHER, script="echo other-build\n")
    rc, out, err = world.cli("logs", DOMAIN)
    assert rc == 1, (out, err)

    world.ok("reconcile")
    out = world.ok("logs", DOMAIN)
    assert "first-build" in out.splitlines(), out
    assert "other-build" not in out

    world.declare(script="echo second-build\n")  # a changed script deploys again
    world.ok("reconcile")
    history = world.history()
    assert len(history) == 2
    newest, oldest = history[0]["id"], history[1]["id"]

    out = world.ok("logs", DOMAIN)
    assert "second-build" in out.splitlines() and "first-build" not in out, out
    out = world.ok("logs", DOMAIN, str(oldest))
    assert "first-build" in out.splitlines() and "second-build" not in out, out
    out = world.ok("logs", DOMAIN, str(newest))
    assert "second-build" in out.splitlines(), out

    # An id of another site's deployment, or no such id at all.
    rc, out, err = world.cli("logs", OTHER, str(oldest))
    assert rc == 1 and "first-build" not in out, (out, err)
    rc, out, err = world.cli("logs", DOMAIN, "99999")
    assert rc == 1, (out, err)
    rc, out, err = world.cli("logs", "nope.example.com")
    assert rc == 1, (out, err)


def test_logs_of_a_failed_deployment(world: CliWorld) -> None:
    world.declare(script="echo before-failure\nfalse\necho never-printed\n")
    rc, _, _ = world.cli("reconcile")
    assert rc == 1
    out = world.ok("logs", DOMAIN)
    assert "before-failure" in out.splitlines() and "never-printed" not in out.splitlines(), out


def test_logs_survive_pruning_of_the_release(world: CliWorld) -> None:
    commits = world.deploy_n(4, keep=1)
    history = world.history()
    assert len(history) == 4
    first = history[-1]
    assert first["commit_sha"] == commits[0]
    assert first["deployment_path"] is None, "keep = 1 must have pruned the first release"
    assert first["release"] not in world.releases()
    out = world.ok("logs", DOMAIN, str(first["id"]))
    assert f"built {commits[0]}" in out.splitlines(), out
    out = world.ok("logs", DOMAIN)
    assert f"built {commits[-1]}" in out.splitlines(), out
