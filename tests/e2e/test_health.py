"""A health check that rolls a bad release back, over a real sshd with a real web server.

The site's `[health]` check runs on the server after every switch: a commit that makes the app
answer 500 (or fail a health `command`) is live only for the check's tries, then the previous
release serves again by itself; the site is Failed with the reason, history has the release as
failed and the automatic rollback as an event, the failure is remembered like a failed build (no
hot loop), and a fixed commit deploys and stays. A pinned release is checked too, but a pin is
never switched away from.

The web server (tests/support/webapp.py) serves `public/health` of whatever the site symlink
points at, like nginx with `$realpath_root`; the check runs curl on the "server" (the sshd).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import World, app_commit
from tests.support.sshd import SshServer
from tests.support.webapp import SiteServer

DOMAIN = "shop.example.com"
OK = "200\nOK v1\n"


@pytest.fixture(name="web")
def web_fixture(tmp_path: Path) -> Iterator[SiteServer]:
    base = tmp_path / "srv"
    base.mkdir()
    server = SiteServer(base)
    yield server
    server.stop()


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, sshd: SshServer, web: SiteServer, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    world = World.create(tmp_path, sshd, base=web.base)
    app_commit(world.app, "v1 healthy", {"public/health": OK})
    return world


def _reconcile(world: World) -> tuple[int, str]:
    rc, out, err = world.run_cli("reconcile")
    return rc, out + err


def _status(world: World) -> dict[str, Any]:
    views: list[dict[str, Any]] = json.loads(world.run_cli("status", "--json").out)
    return views[0]


def _history(world: World) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(world.run_cli("history", DOMAIN, "--json").out)
    return rows


@pytest.mark.parametrize("check", [
    {"url": "URL", "status": "200-299", "contains": "OK"},
    {"command": "grep -q '^200$' public/health"},
], ids=["url", "command"])
def test_a_broken_release_is_switched_back_by_itself(world: World, web: SiteServer, check: dict[str, Any]) -> None:
    health = {k: (web.url if v == "URL" else v) for k, v in check.items()}
    world.declare(script="echo built\n", health={**health, "retries": 2, "interval": 0.2, "timeout": 2})
    rc, out = _reconcile(world)
    assert rc == 0, out
    good = world.active()
    assert web.answers[200] >= 1 or "command" in check

    app_commit(world.app, "v2 breaks everything", {"public/health": "500\nboom\n"})
    rc, out = _reconcile(world)
    assert rc == 1, out
    assert world.active() == good, "the previous release must serve again"
    view = _status(world)
    assert view["sync"] == "Failed" and "health check failed after switch" in view["message"], view
    assert view["active_release"] == good, view
    broken = next(r for r in world.releases() if r not in (good,))
    rows = {r["release"]: r for r in _history(world)}
    assert rows[broken]["status"] == "failed" and "health check failed after switch" in rows[broken]["message"]
    assert "was live" in rows[broken]["message"]
    (back,) = rows[good]["activations"]
    assert back["trigger"] == "auto-rollback" and back["previous"] == broken

    # Remembered like a failed build: the next pass neither rebuilds nor switches.
    rc, out = _reconcile(world)
    assert rc == 1 and world.active() == good and len(world.releases()) == 2, out

    app_commit(world.app, "v3 fixed", {"public/health": "200\nOK v3\n"})
    rc, out = _reconcile(world)
    assert rc == 0, out
    fixed = world.active()
    assert fixed not in (good, broken)
    assert (_status(world)["sync"], _status(world)["health"]) == ("Synced", "Healthy")


def test_a_pinned_release_is_checked_but_never_switched_away_from(world: World, web: SiteServer) -> None:
    world.declare(script="echo built\n", health={"url": web.url, "retries": 0})
    assert _reconcile(world)[0] == 0
    first = world.active()
    app_commit(world.app, "v2", {"public/health": "200\nOK v2\n"})
    assert _reconcile(world)[0] == 0
    # The old release's app starts failing (its health file is per release), then it is pinned.
    assert first is not None
    (world.on_disk().release(first) / "public" / "health").write_text("503\nmaintenance\n")
    rc, out, err = world.run_cli("rollback", DOMAIN)  # switched at once: its answer says so
    assert rc == 0 and "fails its health check" in out and "pin holds" in out, (out, err)
    assert world.active() == first
    view = _status(world)
    assert view["health"] == "Degraded" and "fails its health check" in view["message"] and "pin holds" in \
        view["message"], view
    out = _reconcile(world)[1]
    assert world.active() == first, out
    assert _status(world)["health"] == "Degraded"


def test_between_deploys_health_is_reported_and_shared_links_are_desired_state(
        world: World, web: SiteServer, caplog: pytest.LogCaptureFixture) -> None:
    world.declare(script="echo built\n", health={"url": web.url, "retries": 1, "interval": 0.1})
    assert _reconcile(world)[0] == 0
    live = world.active()
    assert live is not None
    release = world.on_disk().release(live)

    # The live release's `.env` link is deleted by hand: drift, put back at the next poll.
    (release / ".env").unlink()
    with caplog.at_level("WARNING", logger="reconciler"):
        rc, out = _reconcile(world)
    assert rc == 0 and "relink shared .env" in out, out
    assert (release / ".env").is_symlink() and world.active() == live
    assert any("drift" in r.getMessage() and ".env" in r.getMessage() for r in caplog.records)

    # The app starts failing between deploys: Degraded with the reason, and nothing switches.
    (release / "public" / "health").write_text("502\nbad gateway\n")
    rc, out = _reconcile(world)
    view = _status(world)
    assert (view["sync"], view["health"]) == ("Synced", "Degraded"), view
    assert "health check failing: HTTP 502" in view["message"], view
    assert world.active() == live and len(world.releases()) == 1
    (release / "public" / "health").write_text("200\nOK again\n")
    assert _reconcile(world)[0] == 0
    assert _status(world)["health"] == "Healthy"
