"""`status` and `diff` never contradict themselves.

- A CLI rollback with no daemon commits a pin; until a pass applies it, `status` used to say
  `Synced` while PINNED and ACTIVE disagreed. Now such a site is OutOfSync, saying why; the same
  for an unpin not applied yet.
- `status` says how old its facts are: `observed_at`, when the site's server was last probed.
- `diff` proposed a second deploy while another reconciler's build held the site's lock; now a
  held lock is Progressing, naming its holder, with nothing planned.
The shutdown half (rows settled, partial logs kept) is in tests/e2e/test_daemon.py (SIGTERM)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.remote import lock
from tests.support import World, app_commit, neutral_world

DOMAIN = "shop.example.com"


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = neutral_world(tmp_path, monkeypatch)
    world.declare(script="echo built\n")
    assert world.run_cli("reconcile").rc == 0
    return world


def _view(world: World) -> dict[str, Any]:
    views: list[dict[str, Any]] = json.loads(world.run_cli("status", "--json").out)
    return views[0]


def test_a_pin_not_applied_yet_is_not_shown_synced(world: World) -> None:
    first = world.active()
    app_commit(world.app, "v2")
    assert world.run_cli("reconcile").rc == 0
    second = world.active()
    assert world.run_cli("rollback", DOMAIN, "--no-wait").rc == 0  # committed, not applied yet
    view = _view(world)
    assert view["pinned"] == first and view["active_release"] == second
    assert view["sync"] == "OutOfSync" and f"pinned to {first} but {second} is active" in view["message"], view
    assert world.run_cli("reconcile").rc == 0
    view = _view(world)
    assert (view["sync"], view["active_release"]) == ("Synced", first), view

    assert world.run_cli("unpin", DOMAIN, "--no-wait").rc == 0
    view = _view(world)
    assert view["sync"] == "OutOfSync" and "unpinned" in view["message"], view
    assert world.run_cli("reconcile").rc == 0
    assert (_view(world)["sync"], world.active()) == ("Synced", second)


def test_status_says_when_the_facts_were_observed(world: World) -> None:
    view = _view(world)
    observed = time.strptime(view["observed_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(observed) - time.mktime(time.gmtime())) < 3600
    rc, out, _ = world.run_cli("status", DOMAIN)
    assert rc == 0 and f"observed:  {view['observed_at']}" in out, out


def test_diff_reports_a_held_lock_as_progressing(world: World) -> None:
    app_commit(world.app, "v2")
    assert world.run_cli("diff").rc == 1  # a deploy is pending
    owner = lock.Owner("another-instance", "run", socket.gethostname(), os.getpid(), "deploy 01012030-000000",
                       time.time())
    lock_dir = world.on_disk().lock
    lock_dir.mkdir()
    (lock_dir / "owner").write_text(owner.to_json() + "\n")
    rc, out, err = world.run_cli("diff")
    assert rc == 1 and "Progressing" in out and "a change is in progress" in out, (out, err)
    assert "+ deploy" not in out, out
