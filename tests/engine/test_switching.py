"""A failed reload is not forgotten: after a switch whose reload fails (php-fpm
without sudo, say) the site stays Degraded, with the reason, and every pass retries the reload
until it succeeds; only then is it Healthy. The daemon retries it with backoff (outcome
`retry_after`). A release that failed only its health check, forgiven (`retry`), is checked again
without a build and, passing, is deployed (the `deployed` event). Sites on "local", the CLI in
this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.plan import Deploy
from reconciler.engine.outcome import RELOAD_RETRY
from reconciler.engine.store import Store
from tests.support import World, neutral_world

DOMAIN = "shop.example.com"


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return neutral_world(tmp_path, monkeypatch)  # its config opts in to local sites


def _status(world: World) -> dict[str, Any]:
    views: list[dict[str, Any]] = json.loads(world.run_cli("status", "--json").out)
    return views[0]


def _reloads(world: World) -> int:
    return (world.on_disk().link / "deployment.log").read_text().count("==> reload")


def test_a_failed_reload_is_retried_until_it_succeeds(world: World, tmp_path: Path) -> None:
    fpm = tmp_path / "fpm-ok"
    world.declare(script="echo built\n", reload=f"test -e {fpm} || {{ echo 'sudo: a password is required'; exit 1; }}")
    rc, out, err = world.run_cli("reconcile")
    assert "Synced/Degraded" in out and "reload command failed (exit 1)" in out, (out, err)
    assert _reloads(world) == 1

    # The next pass (nothing else changed) retries the reload and stays Degraded with the reason.
    rc, out, err = world.run_cli("reconcile")
    assert "retry the reload of release" in out, out
    view = _status(world)
    assert (view["sync"], view["health"]) == ("Synced", "Degraded"), view
    assert "reload command failed (exit 1)" in view["message"], view
    assert _reloads(world) == 2

    fpm.touch()
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0 and "Synced/Healthy" in out, (out, err)
    assert _reloads(world) == 3
    # Settled: the next pass does nothing.
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0 and "retry the reload" not in out and _reloads(world) == 3


def test_the_daemon_is_told_to_retry_a_failed_reload_with_backoff(world: World) -> None:
    world.declare(script="echo built\n", reload="exit 127")
    outcome = world.reconcile_in_process(allow_local=True)[DOMAIN]
    assert (outcome.sync, outcome.health) == ("Synced", "Degraded")
    assert outcome.retry_after == RELOAD_RETRY and outcome.backoff


def test_a_forgiven_health_failure_that_passes_when_checked_again_is_deployed(world: World, tmp_path: Path) -> None:
    sick = tmp_path / "sick"
    sick.touch()
    world.declare(script="echo built\n", health={"command": f"test ! -e {sick}", "retries": 0})
    failed = world.reconcile_in_process(allow_local=True)[DOMAIN]
    assert failed.sync == "Failed" and not failed.deployed, failed
    releases = world.releases()
    sick.unlink()
    store = Store(world.state / "reconciler.db")
    try:
        assert store.forgive(DOMAIN) == 1
    finally:
        store.close()
    again = world.reconcile_in_process(allow_local=True)[DOMAIN]
    assert (again.sync, again.health) == ("Synced", "Healthy") and again.deployed, again
    assert [a.action for a in again.applied if isinstance(a.action, Deploy)] == [Deploy(releases[0], world.head())]
    assert world.releases() == releases, "checked again, not rebuilt"
