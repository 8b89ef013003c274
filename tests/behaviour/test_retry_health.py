"""Behaviour: `retry` of a release whose build succeeded and whose health check failed checks
that release again, without a build: a first deploy (still live: nothing to return to) is checked
again in place; a later one (switched back) is switched to and checked. One that fails again is
remembered again, not checked every pass. A first deploy that failed its check is shown live
where it stays live. For a site on one server and on two.

Real sshds, real git, the CLI in this process; the flag file `sick` under base_path makes the
health check fail on the server it is on.
"""

from __future__ import annotations

import json

import pytest

from reconciler.core.layout import MANIFEST_NAME
from tests.support.fleet import Fleet

pytestmark = pytest.mark.ssh


def _declare(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n", health={
        "command": f"test ! -e {fleet.path('sick')}", "retries": 0, "interval": 0.1})


def _manifest_status(fleet: Fleet, release: str) -> list[str]:
    return [json.loads((fleet.site(s).release(release) / MANIFEST_NAME).read_text())["status"]
            for s in fleet.servers]


def _failures_logged(fleet: Fleet, release: str) -> list[int]:
    """How many times each server's log of `release` says its health check failed after a switch."""
    return [(fleet.site(s).release(release) / "deployment.log").read_text().count("==> health check failed")
            for s in fleet.servers]


def test_retry_checks_a_first_deploy_that_failed_its_health_check_again_without_a_build(fleet: Fleet) -> None:
    _declare(fleet)
    fleet.touch("sick", on=fleet.last)
    assert fleet.reconcile().rc == 1
    release = fleet.live_release()  # nothing to return to: it stays live
    assert fleet.status()["sync"] == "Failed"
    built = fleet.releases()
    fleet.remove("sick")
    rc, out, err = fleet.cli("retry", fleet.domain)
    assert rc == 0, (out, err)
    assert fleet.releases() == built, "no rebuild: the release already built is checked again"
    assert fleet.live_release() == release and _manifest_status(fleet, release) == ["success"] * len(fleet.servers)
    view = fleet.status()
    assert (view["sync"], view["health"], view["active_release"]) == ("Synced", "Healthy", release), view
    (row,) = fleet.history()
    assert row["release"] == release and row["status"] == "success", row
    assert [(a["trigger"], bool(a["requested_by"])) for a in row["activations"]] == [("retry", True)], row
    # Answered: the next pass has nothing to do.
    assert fleet.reconcile().rc == 0 and fleet.releases() == built and fleet.live_release() == release


def test_retry_switches_to_a_release_that_failed_its_health_check_after_the_cause_is_fixed(fleet: Fleet) -> None:
    _declare(fleet)
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    fleet.touch("sick", on=fleet.last)
    fleet.commit("v2")
    assert fleet.reconcile().rc == 1
    assert fleet.live_release() == first
    built = fleet.releases()
    (second,) = {name for names in built for name in names} - {first}
    fleet.remove("sick")
    rc, out, err = fleet.cli("retry", fleet.domain)
    assert rc == 0, (out, err)
    assert fleet.releases() == built and fleet.live_release() == second
    assert fleet.live_commits() == [fleet.head()] * len(fleet.servers)
    assert fleet.status()["sync"] == "Synced"


def test_a_release_that_fails_its_health_check_again_is_remembered_again(fleet: Fleet) -> None:
    _declare(fleet)
    fleet.touch("sick", on=fleet.last)
    assert fleet.reconcile().rc == 1
    release, built = fleet.live_release(), fleet.releases()
    rc, out, err = fleet.cli("retry", fleet.domain)  # still sick
    assert rc != 0 and fleet.releases() == built and fleet.live_release() == release, (out, err)
    view = fleet.status()
    assert view["sync"] == "Failed" and "health check failed" in view["message"], view
    assert _failures_logged(fleet, release) == [2] * len(fleet.servers), "the first check and the retry's"
    assert fleet.reconcile().rc == 1
    assert _failures_logged(fleet, release) == [2] * len(fleet.servers), "remembered: not switched to again"
    assert fleet.releases() == built


def test_a_first_deploy_that_fails_its_health_check_is_shown_live_where_it_stays_live(fleet: Fleet) -> None:
    _declare(fleet)
    fleet.touch("sick", on=fleet.last)
    assert fleet.reconcile().rc == 1
    release = fleet.live_release()
    view = fleet.status()
    assert view["active_release"] == release, view
    assert view["message"].endswith("there is no previous release to return to, so it stays live"), view
