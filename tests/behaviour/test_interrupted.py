"""SIGTERM mid-build, for a site on one server and on two: the daemon stops,
no server switches to the half-built release, and nothing half-built is left once the next pass
has run. The real daemon process (`reconciler run`), real sshds."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.support.fleet import Fleet, shapes
from tests.support.process import Daemons, reconciler_process
from tests.support.wait import wait_until

pytestmark = pytest.mark.ssh  # the sshds come from a folder-wide fixture the root conftest does not see


@pytest.mark.parametrize("fleet", shapes(), indirect=True)
def test_sigterm_mid_build_switches_no_server_and_leaves_nothing_half_built(fleet: Fleet, daemons: Daemons) -> None:
    slow, started = fleet.path("slow"), fleet.path("started")
    fleet.declare(script=f"if [ -e {slow} ]; then touch {started}; sleep 60; fi\necho built\n")
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    fleet.touch("slow", on=fleet.last)
    fleet.commit("v2")
    daemon = daemons.launcher(fleet.tmp, fleet.config).start()
    wait_until(lambda: (fleet.disk(fleet.last) / "started").exists(), 30, "the build to start", daemon.tail)
    assert len([name for name in fleet.site(fleet.last).releases() if name != live]) == 1, "one half-built"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=40) == 0, daemon.tail()
    assert fleet.live() == [live] * len(fleet.servers), "no server may switch to a half-built release"


    fleet.remove("slow")
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    new = fleet.live_release()
    assert new != live and fleet.live_commits() == [fleet.head()] * len(fleet.servers)
    assert fleet.releases() == [[live, new]] * len(fleet.servers), "the half-built release must be gone"


@pytest.mark.parametrize("fleet", shapes(), indirect=True)
def test_a_release_whose_script_once_never_finished_is_never_switched_to_or_rolled_back_to(fleet: Fleet) -> None:
    """The reconciler is killed (SIGKILL, and its step on the server with it) while script_once
    (migrations) runs: the release was built, its first server's manifest says the run-once step
    is still owed. It is not offered for rollback, and the next pass runs script_once, then
    switches (before, it was taken for done as soon as any server had a build of it)."""
    hang = fleet.path("hang-once")
    fleet.declare(script="echo built\n",
                  script_once=(f"basename \"$PWD\" >> {fleet.path('migrations')}\n"
                               f"if [ -e {hang} ]; then touch {fleet.path('once-started')}; sleep 61; fi\n"))
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    fleet.touch("hang-once", on=fleet.first)
    fleet.commit("v2")
    proc = reconciler_process("--config", str(fleet.config), "reconcile", cwd=fleet.tmp, start_new_session=True)
    try:
        wait_until(lambda: (fleet.disk(fleet.first) / "once-started").exists(), 60, "script_once to start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    subprocess.run(["pkill", "-KILL", "-f", "sleep 61"], check=False)  # the step on the server dies too
    assert fleet.live() == [live] * len(fleet.servers)
    (owed,) = [name for name in fleet.site(fleet.first).releases() if name != live]

    rc, out, err = fleet.cli("rollback", fleet.domain, owed)
    assert rc == 1 and "never completed its script_once" in err, (out, err)

    fleet.remove("hang-once", on=fleet.first)
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    assert fleet.live() == [owed] * len(fleet.servers)
    assert fleet.lines("migrations") == [live, owed, owed], "script_once ran again, to the end, before the switch"
