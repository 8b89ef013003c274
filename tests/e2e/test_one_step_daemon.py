"""With a daemon running, the command line never waits for its poll: `rollback` and `unpin`
wake it over its control socket and return when its switch is done (the command itself sends
no SSH command after the commit); `redeploy --no-wait` wakes it and says the build is queued,
and the daemon builds at once. The daemon polls once an hour here: only the wake can explain
what happens. On a site on one server and on two (the switch is all-or-nothing)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.support import wait_until
from tests.support.config import write_config
from tests.support.fleet import SHAPES, Fleet
from tests.support.process import Daemons, Launcher
from tests.support.ssh_log import ssh_log
from tests.support.sshd import ServerPair


@pytest.fixture(name="fleet", params=SHAPES)
def fleet_fixture(request: pytest.FixtureRequest, sshd_pair: ServerPair, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Fleet:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    fleet = Fleet(request.param, sshd_pair, tmp_path)
    write_config(fleet.config, repo=fleet.decl, state=fleet.state, server=sshd_pair.servers[0], interval=3600,
                 command_timeout=30, deploy_timeout=60)
    return fleet


def _daemon_on_two_releases(fleet: Fleet, daemons: Daemons) -> tuple[Launcher, str, str]:
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    fleet.commit("v2")
    assert fleet.reconcile().rc == 0
    launcher = daemons.launcher(fleet.tmp, fleet.config)
    launcher.start()
    control = fleet.state / "control.sock"
    wait_until(control.exists, 30, "the daemon's control socket", launcher.diagnostics)
    assert stat.S_IMODE(control.stat().st_mode) == 0o600, "owner-only"
    return launcher, first, fleet.live_release()


def test_rollback_and_unpin_wait_for_the_running_daemons_switch(fleet: Fleet, daemons: Daemons,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    launcher, first, second = _daemon_on_two_releases(fleet, daemons)
    log = ssh_log(monkeypatch)
    rc, out, err = fleet.cli("rollback", fleet.domain)
    assert rc == 0, (out, err, launcher.diagnostics())
    assert fleet.live() == [first] * len(fleet.servers), "live when the command returns"
    assert f"{fleet.domain}: live: {first} (" in out and "applied by the daemon" in out, out
    assert log.committed and not log.count("run", after_commit=True), "the daemon switched, not the command"

    rc, out, err = fleet.cli("unpin", fleet.domain)
    assert rc == 0, (out, err, launcher.diagnostics())
    assert fleet.live() == [second] * len(fleet.servers)
    assert f"{fleet.domain}: live: {second} (" in out and "applied by the daemon" in out, out
    assert fleet.releases() == [[first, second]] * len(fleet.servers), "nothing rebuilt"


def test_redeploy_no_wait_wakes_the_daemon_and_says_queued(fleet: Fleet, daemons: Daemons) -> None:
    launcher, _, second = _daemon_on_two_releases(fleet, daemons)
    rc, out, err = fleet.cli("redeploy", fleet.domain, "--no-wait")
    assert rc == 0, (out, err)
    assert out.endswith("queued; the daemon builds it now\n") and "building now" not in out, out
    wait_until(lambda: all(live not in (None, second) for live in fleet.live()), 30,
               "the daemon's fresh build, long before its next poll", launcher.diagnostics)
    assert len(set(fleet.live())) == 1
