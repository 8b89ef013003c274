"""What `history` and `status` say of a site, for a site on one server and on two.

A release is one history entry whatever the number of servers, with each server's result nested
in `servers`; Rollback (`can_rollback`) is offered only for a release the rollback action takes on
every server; a switch of every server is one activation; `status` says when the live release went
live, when the servers were observed and which commit the site wants. On today's main a site on
two servers has two entries per release (the live release's twin offers a Rollback the action
refuses), two activations per automatic rollback, and LAST DEPLOY, observed and desired blank.

Real sshds (each server its own filesystem), real git, the CLI in this process.
"""

from __future__ import annotations

import shutil

import pytest

from tests.support.fleet import Fleet

pytestmark = pytest.mark.ssh  # the sshds come from a folder-wide fixture the root conftest does not see


def _build(fleet: Fleet) -> str:
    """A build script that fails while `broken` exists on the server."""
    return f"test ! -e {fleet.path('broken')} || {{ echo 'composer: mirror down'; exit 3; }}\necho built\n"


def test_a_failed_build_is_one_history_entry_naming_the_server_it_failed_on(fleet: Fleet) -> None:
    fleet.declare(script=_build(fleet))
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    fleet.touch("broken", on=fleet.last)
    fleet.commit("v2")
    assert fleet.reconcile().rc == 1
    newest, older = fleet.history()
    assert (newest["status"], newest["trigger"], newest["is_active"], newest["can_rollback"]) == (
        "failed", "app commit", False, False), newest
    results = {s["server"]: s for s in newest["servers"]}
    assert list(results) == fleet.targets, newest["servers"]
    assert results[fleet.last.destination]["status"] == "failed"
    assert "deploy script failed (exit 3)" in results[fleet.last.destination]["message"], results
    assert all(s["status"] == "success" for name, s in results.items() if name != fleet.last.destination)
    assert newest["id"] == newest["servers"][0]["id"], "the entry's id is its first server's build"
    assert ("exit 3" in newest["message"]) and (fleet.shape == "one" or fleet.last.destination in newest["message"])
    assert (older["release"], older["status"], older["is_active"]) == (live, "success", True), older
    assert [s["server"] for s in older["servers"]] == fleet.targets
    # The table shows the release on one row (followed by a row per server on a site of two).
    out = fleet.cli("history", fleet.domain).out
    assert out.count(newest["release"]) == 1 and out.count(live) == 1, out
    if fleet.shape == "two":
        assert all(f"  {server}" in out for server in fleet.targets), out


def test_rollback_is_offered_only_for_a_release_every_server_can_switch_to(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    fleet.commit("v2")
    assert fleet.reconcile().rc == 0
    second = fleet.live_release()
    rows = fleet.history()
    assert [(r["release"], r["is_active"], r["can_rollback"]) for r in rows] == [
        (second, True, False), (first, False, True)], rows
    assert all(len(r["servers"]) == len(fleet.servers) for r in rows), rows
    # The action agrees: the live release is refused, the offered one is a candidate.
    assert fleet.cli("rollback", fleet.domain, second).rc == 1
    # Gone from one server (by hand; the next pass sees it): offered nowhere, refused by the action.
    shutil.rmtree(fleet.site(fleet.last).release(first))
    fleet.reconcile()
    assert [r["can_rollback"] for r in fleet.history()] == [False, False], fleet.history()
    assert fleet.cli("rollback", fleet.domain, first).rc == 1


def test_an_automatic_rollback_is_one_activation(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n",
                  health={"command": f"test ! -e {fleet.path('sick')}", "retries": 0, "interval": 0.1})
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    fleet.touch("sick", on=fleet.last)
    fleet.commit("v2")
    assert fleet.reconcile().rc == 1
    newest, older = fleet.history()
    assert (newest["status"], newest["trigger"], older["release"]) == ("failed", "app commit", live), newest
    assert [s["status"] for s in newest["servers"]] == ["failed"] * len(fleet.servers)
    (back,) = older["activations"]
    assert (back["trigger"], back["previous"]) == ("auto-rollback", newest["release"]), older["activations"]
    out = fleet.cli("history", fleet.domain).out
    assert out.count("auto-rollback") == 1, out


def test_status_says_when_it_went_live_when_it_was_observed_and_what_it_wants(fleet: Fleet) -> None:
    fleet.declare(script=_build(fleet))
    assert fleet.reconcile().rc == 0
    first_commit = fleet.head()
    view = fleet.status()
    assert view["desired_commit"] == first_commit == view["active_commit"], view
    assert view["last_deployed_at"] and view["observed_at"], view
    deployed = view["last_deployed_at"]
    out = fleet.cli("status", fleet.domain).out
    assert f"desired:   {first_commit[:12]}" in out and f"deployed:  {deployed}" in out, out
    assert "observed:  never" not in out, out
    # A commit that fails to build: the site wants it, the live release stays (and its time).
    fleet.touch("broken", on=fleet.last)
    wanted = fleet.commit("v2")
    assert fleet.reconcile().rc == 1
    view = fleet.status()
    assert (view["desired_commit"], view["active_commit"], view["last_deployed_at"]) == (
        wanted, first_commit, deployed), view
    # Fixed and retried: live, and the site's latest deploy.
    fleet.remove("broken")
    assert fleet.cli("retry", fleet.domain).rc == 0
    view = fleet.status()
    assert (view["sync"], view["desired_commit"], view["active_commit"]) == ("Synced", wanted, wanted), view
    assert view["last_deployed_at"] >= deployed, view
    table = fleet.cli("status").out.splitlines()[1]
    assert view["last_deployed_at"] in table, table
