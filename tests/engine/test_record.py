"""History explains itself: every deployment says why it failed (message, exit
status), what was built (commit subject and author), what started it (first deploy, app commit,
declaration, retry, redeploy) and who asked; switches without a build (rollback, unpin, drift
corrected) are events in history too, and count as the site's latest change. Sites on "local",
the CLI in this process, real git."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import World, app_commit, git, neutral_world

DOMAIN = "shop.example.com"


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return neutral_world(tmp_path, monkeypatch)  # its config opts in to local sites


def _reconcile(world: World) -> None:
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0, (out, err)


def test_deploys_say_why_and_what(world: World) -> None:
    world.declare(script="echo one\n")
    _reconcile(world)
    app_commit(world.app, "Fix the checkout total")
    _reconcile(world)
    world.declare(script="echo two\n")
    _reconcile(world)
    world.declare(script="echo three; exit 5\n")
    assert world.run_cli("reconcile").rc == 1
    failed, declaration, commit, first = world.history_rows()
    assert first["trigger"] == "first deploy"
    assert commit["trigger"] == "app commit" and commit["commit_subject"] == "Fix the checkout total"
    assert declaration["trigger"] == "declaration"
    assert failed["status"] == "failed" and failed["exit_status"] == 5 and "exit 5" in failed["message"]
    table = world.run_cli("history", DOMAIN).out
    assert "Fix the checkout total" in table and "app commit" in table and "exit 5" in table, table


def test_rollback_unpin_and_drift_are_events_in_history(world: World) -> None:
    world.declare(script="echo built\n")
    _reconcile(world)
    first = world.active()
    app_commit(world.app, "v2")
    _reconcile(world)
    second = world.active()
    before = json.loads(world.run_cli("status", "--json").out)[0]["last_deployed_at"]

    assert world.run_cli("rollback", DOMAIN).rc == 0
    _reconcile(world)
    (rollback,) = next(r for r in world.history_rows() if r["release"] == first)["activations"]
    author = git(world.decl, "log", "-1", "--format=%an <%ae>")
    assert rollback["trigger"] == "rollback" and rollback["previous"] == second
    assert rollback["requested_by"] == author
    after = json.loads(world.run_cli("status", "--json").out)[0]["last_deployed_at"]
    assert after >= before and after == rollback["at"], "a rollback is the site's latest change"

    assert world.run_cli("unpin", DOMAIN).rc == 0
    _reconcile(world)
    (unpin,) = next(r for r in world.history_rows() if r["release"] == second)["activations"]
    assert unpin["trigger"] == "unpin" and unpin["previous"] == first

    # Someone points the site at the old release by hand: the next pass corrects it, as drift.
    link = world.on_disk().link
    temp = link.with_name(".hand-made")
    temp.symlink_to(f"deployments/{DOMAIN}/{first}")
    os.replace(temp, link)
    _reconcile(world)
    assert world.active() == second
    drift = next(r for r in world.history_rows() if r["release"] == second)["activations"][0]
    assert drift["trigger"] == "drift" and drift["previous"] == first

    table = world.run_cli("history", DOMAIN).out
    assert table.count("activated") == 3 and "rollback" in table and "drift" in table, table
