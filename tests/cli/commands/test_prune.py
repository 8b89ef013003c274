"""`reconciler prune [--keep N] [--dry-run] [--site D]`: removes old releases now, never the
active or the pinned one; pruned deployments stay in the history; --dry-run lists and removes
nothing; --site touches only that site. With `retention_days`, prune also forgets history and
logs older than that, of releases no longer on the server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.cli_world import DOMAIN, OTHER, CliWorld
from tests.support.config import write_config


def test_prune_dry_run_lists_and_removes_nothing(world: CliWorld) -> None:
    world.deploy_n(3)
    releases = world.releases()
    rc, out, err = world.cli("prune", "--keep", "1", "--dry-run")
    assert rc == 0, (out, err)
    assert releases[0] in out and releases[1] in out, out
    assert world.releases() == releases
    assert all(h["deployment_path"] is not None for h in world.history())


def test_prune_keep_1_keeps_only_the_active_release(world: CliWorld) -> None:
    commits = world.deploy_n(3)
    first, second, third = world.releases()
    assert world.active() == third
    rc, out, err = world.cli("prune", "--keep", "1")
    assert rc == 0, (out, err)
    assert world.releases() == [third]
    assert world.active() == third
    history = {h["release"]: h for h in world.history()}
    assert history[first]["deployment_path"] is None and history[second]["deployment_path"] is None
    assert history[third]["deployment_path"] == str(world.deployments() / third)
    assert not history[first]["can_rollback"] and not history[second]["can_rollback"]
    assert [h["commit_sha"] for h in world.history()] == commits[::-1], "pruned deployments stay in history"


def test_prune_keep_1_spares_the_pinned_release(world: CliWorld) -> None:
    world.deploy_n(3)
    first, _second, third = world.releases()
    world.ok("rollback", DOMAIN, first)  # committed, not applied yet
    rc, out, err = world.cli("prune", "--keep", "1")
    assert rc == 0, (out, err)
    assert world.releases() == [first, third]
    world.ok("reconcile")
    assert world.active() == first


def test_prune_site_touches_only_that_site(world: CliWorld) -> None:
    world.deploy_n(2)
    world.deploy_n(2, OTHER)
    others = world.releases(OTHER)
    assert len(others) >= 2
    world.ok("prune", "--keep", "1", "--site", DOMAIN)
    assert len(world.releases()) == 1
    assert world.releases(OTHER) == others


def test_keep_below_1_is_a_usage_error_and_removes_nothing(world: CliWorld) -> None:
    world.deploy_n(2)
    releases = world.releases()
    rc, out, err = world.cli("prune", "--keep", "0")
    assert rc == 2 and "--keep must be at least 1" in err, (out, err)
    assert world.releases() == releases


def _age(world: CliWorld, releases: list[str], at: str) -> list[Path]:
    """Make these releases' rows as old as `at` (the real database file); their local logs."""
    with sqlite3.connect(world.state / "reconciler.db") as db:
        marks = ",".join("?" * len(releases))
        db.execute(f"update deployments set started_at = ?, completed_at = ? where release in ({marks})",
                   [at, at, *releases])
        return [Path(p) for (p,) in db.execute(f"select local_log from deployments where release in ({marks})",
                                               releases)]


def test_prune_forgets_history_older_than_retention_days_of_releases_gone(world: CliWorld) -> None:
    write_config(world.tmp / "allow-local.toml", interval=None, retention_days=30)
    world.deploy_n(3)
    first, second, third = world.releases()
    world.ok("prune", "--keep", "1")
    logs = _age(world, [first, third], "2020-01-01T00:00:00Z")
    assert all(log.is_file() for log in logs)
    out = world.ok("prune", "--dry-run")
    assert "history: would forget 1 deployment, 0 activations and 1 log older than 30 days" in out, out
    assert len(world.history()) == 3
    out = world.ok("prune")
    assert "history: forgot 1 deployment, 0 activations and 1 log older than 30 days" in out, out
    # The first release's row and log are gone; the second (recent) and the live third (old) stay.
    assert sorted(h["release"] for h in world.history()) == [second, third]
    assert sum(log.exists() for log in logs) == 1


def test_without_retention_days_prune_keeps_all_history(world: CliWorld) -> None:
    world.deploy_n(3)
    first, _, _ = world.releases()
    world.ok("prune", "--keep", "1")
    _age(world, [first], "2020-01-01T00:00:00Z")
    out = world.ok("prune")
    assert "history" not in out and len(world.history()) == 3, out
