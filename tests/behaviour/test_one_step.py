"""`rollback` and `unpin` are one step: with no daemon running, the command returns when the
release is live on every server of the site, having switched it itself, on the SSH connection
its check before the commit opened; on one server in at most two commands after the commit
(the lock command re-checks the pin and switches, then the release of the lock)."""

from __future__ import annotations

import pytest

from tests.support.fleet import Fleet
from tests.support.ssh_log import ssh_log

pytestmark = pytest.mark.ssh


def test_rollback_and_unpin_return_with_the_release_live(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = fleet.two_releases()
    servers = set(fleet.targets)
    log = ssh_log(monkeypatch)

    rc, out, err = fleet.cli("rollback", fleet.domain)
    assert rc == 0, (out, err)
    assert fleet.live() == [first] * len(fleet.servers), "live when the command returns"
    assert f"{fleet.domain}: live: {first} (" in out and "applied here" in out, out
    assert log.committed
    assert dict(log.count("connect")) == dict.fromkeys(servers, 1), "the check and the switch share a connection"
    after = log.count("run", after_commit=True)
    assert set(after) == servers, log.events
    if len(servers) == 1:
        assert max(after.values()) <= 2, log.events
    view = fleet.status()
    assert (view["sync"], view["pinned"], view["active_release"]) == ("Synced", first, first), view

    log.clear()
    rc, out, err = fleet.cli("unpin", fleet.domain)
    assert rc == 0, (out, err)
    assert fleet.live() == [second] * len(fleet.servers)
    assert f"{fleet.domain}: live: {second} (" in out, out
    assert dict(log.count("connect")) == dict.fromkeys(servers, 1)
    if len(servers) == 1:
        assert max(log.count("run", after_commit=True).values()) <= 2, log.events
    assert fleet.releases() == [[first, second]] * len(fleet.servers), "nothing rebuilt"

    rc, out, err = fleet.reconcile()
    assert rc == 0 and "activate" not in out.lower(), ("applied once: the next pass has nothing to do", out)


def test_rollback_no_wait_only_commits(fleet: Fleet) -> None:
    first, second = fleet.two_releases()
    rc, out, err = fleet.cli("rollback", fleet.domain, "--no-wait")
    assert rc == 0, (out, err)
    assert f"pinned to {first}" in out and "live" not in out, out
    assert fleet.live() == [second] * len(fleet.servers), "--no-wait switches nothing itself"
    assert fleet.reconcile().rc == 0
    assert fleet.live() == [first] * len(fleet.servers)


def test_an_unpin_back_to_the_commit_the_pinned_release_was_built_from_switches_nothing(fleet: Fleet) -> None:
    """Two builds of the same commit (a redeploy), the older pinned: the unpin leaves it live, as
    the planner says (the live release is a build of the branch's head), never switching to the
    newer build through the lock command's shortcut."""
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    rc, out, err = fleet.cli("redeploy", fleet.domain)
    assert rc == 0, (out, err)
    second = fleet.live_release()
    assert second != first
    assert fleet.cli("rollback", fleet.domain, first).rc == 0
    assert fleet.live() == [first] * len(fleet.servers)

    rc, out, err = fleet.cli("unpin", fleet.domain)
    assert rc == 0, (out, err)
    assert fleet.live() == [first] * len(fleet.servers), "a build of the head is live already: no switch"
    view = fleet.status()
    assert (view["sync"], view["pinned"], view["active_release"]) == ("Synced", None, first), view
