"""Behaviour scenarios: every one for a site on one server and on two.

A single-server site and a `servers = [...]` site are one design to the operator: each scenario
asserts the same behaviour for both shapes. Where today's code is wrong for a shape (a known
bug of that shape), the scenario still asserts the right behaviour and that shape is a strict xfail
naming the bug (`shapes(one=..., two=...)`): the day the redesign fixes it, the marker must go.

Real sshds (each server its own filesystem), real git, the CLI in this process. Flag files under
base_path (`fleet.touch`) make a script, check or reload fail on the server they are on.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import pytest

from reconciler.core.layout import MANIFEST_NAME, parse_release, release_name
from tests.support.fleet import Fleet, shapes

pytestmark = pytest.mark.ssh  # the sshds come from a folder-wide fixture the root conftest does not see


# script_once that records which release it ran in, on the server it ran on, and fails while
# `migrate-broken` exists there.
def _once(fleet: Fleet) -> str:
    return (f"test ! -e {fleet.path('migrate-broken')} || {{ echo 'SQLSTATE: no such table'; exit 3; }}\n"
            f"basename \"$PWD\" >> {fleet.path('migrations')}\n")


def _build(fleet: Fleet) -> str:
    """A build script that fails while `broken` exists on the server."""
    return f"test ! -e {fleet.path('broken')} || {{ echo 'composer: mirror down'; exit 3; }}\necho built\n"


def test_deploy(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    live = fleet.live_release()
    assert fleet.live_commits() == [fleet.head()] * len(fleet.servers)
    for server in fleet.servers:
        assert (fleet.site(server).link / "public" / "index.php").read_text() == "<?php echo 'v1';\n"
    view = fleet.status()
    assert (view["sync"], view["health"], view["active_release"]) == ("Synced", "Healthy", live), view
    # Converged: another pass builds and switches nothing.
    before = fleet.releases()
    assert fleet.reconcile().rc == 0
    assert fleet.releases() == before and fleet.live_release() == live


def test_new_commit(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    second_commit = fleet.commit("v2")
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    second = fleet.live_release()
    assert second != first, "one new release name on every server"
    assert fleet.live_commits() == [second_commit] * len(fleet.servers)
    assert fleet.releases() == [[first, second]] * len(fleet.servers)
    view = fleet.status()
    assert (view["sync"], view["active_release"], view["active_commit"]) == ("Synced", second, second_commit), view


def test_failing_build_keeps_the_previous_release_live_everywhere(fleet: Fleet) -> None:
    fleet.declare(script=_build(fleet))
    assert fleet.reconcile().rc == 0
    live, good = fleet.live_release(), fleet.live_commits()
    fleet.touch("broken", on=fleet.last)
    fleet.commit("v2")
    rc, out, err = fleet.reconcile()
    assert rc == 1, (out, err)
    assert fleet.live() == [live] * len(fleet.servers) and fleet.live_commits() == good, "no server may switch"
    assert fleet.status()["sync"] == "Failed"
    # The failure is remembered (no hot loop): the next pass builds nothing.
    built = fleet.releases()
    assert fleet.reconcile().rc == 1
    assert fleet.releases() == built and fleet.live() == [live] * len(fleet.servers)


@pytest.mark.parametrize("fleet", shapes(), indirect=True)
def test_failing_script_once_switches_no_server_now_or_at_the_next_pass(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n", script_once=_once(fleet))
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    assert fleet.lines("migrations") == [live], "script_once ran once, in the release that went live"
    fleet.touch("migrate-broken", on=fleet.first)
    fleet.commit("v2")
    rc, out, err = fleet.reconcile()
    assert rc == 1, (out, err)
    assert fleet.live() == [live] * len(fleet.servers), "a failed script_once switches no server"
    assert fleet.status()["sync"] == "Failed"
    # The blocker: the next pass must not switch to the release whose migration failed.
    fleet.reconcile()
    assert fleet.live() == [live] * len(fleet.servers), "the next pass switched without script_once"
    assert fleet.status()["sync"] == "Failed"
    # Fixed: `retry` runs script_once, and only then does the release go live.
    fleet.remove("migrate-broken")
    rc, out, err = fleet.cli("retry", fleet.domain)
    assert rc == 0, (out, err)
    new = fleet.live_release()
    assert new != live and fleet.lines("migrations") == [live, new]


@pytest.mark.parametrize("fleet", shapes(), indirect=True)
def test_retry_after_a_failed_build_runs_script_once_for_the_release_that_goes_live(fleet: Fleet) -> None:
    fleet.declare(script=_build(fleet), script_once=_once(fleet))
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    assert fleet.lines("migrations") == [live]
    fleet.touch("broken", on=fleet.last)
    fleet.commit("v2")
    assert fleet.reconcile().rc == 1
    assert fleet.live() == [live] * len(fleet.servers)
    fleet.remove("broken")
    rc, out, err = fleet.cli("retry", fleet.domain)
    assert rc == 0, (out, err)
    new = fleet.live_release()
    assert new != live and fleet.live_commits() == [fleet.head()] * len(fleet.servers)
    assert fleet.lines("migrations") == [live, new], "script_once must run for the release that went live"


def test_redeploy_builds_a_fresh_release_of_the_same_commit(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    rc, out, err = fleet.cli("redeploy", fleet.domain)
    assert rc == 0, (out, err)
    second = fleet.live_release()
    assert second != first, "redeploy must build and switch to a fresh release"
    assert fleet.live_commits() == [fleet.head()] * len(fleet.servers)
    # History says it was asked for, and by whom, on every server that built it.
    rows = [row for row in fleet.history() if row["release"] == second]
    assert rows and all(row["trigger"] == "redeploy" and row["requested_by"] for row in rows), rows
    # Answered: the next pass has nothing to do.
    assert fleet.reconcile().rc == 0 and fleet.live_release() == second
    assert fleet.releases() == [[first, second]] * len(fleet.servers)


def test_pin_and_unpin_switch_every_server(fleet: Fleet) -> None:
    first, second = fleet.two_releases()
    rc, out, err = fleet.cli("rollback", fleet.domain)
    assert rc == 0, (out, err)
    assert fleet.reconcile().rc == 0
    assert fleet.live() == [first] * len(fleet.servers)
    view = fleet.status()
    assert (view["sync"], view["pinned"], view["active_release"]) == ("Synced", first, first), view
    # A pin holds against new commits.
    fleet.commit("v3")
    assert fleet.reconcile().rc == 0 and fleet.live() == [first] * len(fleet.servers)
    rc, out, err = fleet.cli("unpin", fleet.domain)
    assert rc == 0, (out, err)
    assert fleet.reconcile().rc == 0
    third = fleet.live_release()
    assert third not in (first, second) and fleet.live_commits() == [fleet.head()] * len(fleet.servers)


def test_health_failure_after_a_switch_rolls_every_server_back(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n",
                  health={"command": f"test ! -e {fleet.path('sick')}", "retries": 0, "interval": 0.1})
    assert fleet.reconcile().rc == 0
    live, good = fleet.live_release(), fleet.live_commits()
    fleet.touch("sick", on=fleet.last)
    fleet.commit("v2")
    rc, out, err = fleet.reconcile()
    assert rc == 1, (out, err)
    assert fleet.live() == [live] * len(fleet.servers) and fleet.live_commits() == good
    view = fleet.status()
    assert view["sync"] == "Failed" and "health check failed" in view["message"], view
    # Remembered as a failed release: the next pass neither rebuilds nor switches again.
    built = fleet.releases()
    assert fleet.reconcile().rc == 1
    assert fleet.live() == [live] * len(fleet.servers) and fleet.releases() == built


def test_a_deleted_shared_link_is_put_back(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    env = fleet.site(fleet.last).release(live) / ".env"
    assert env.is_symlink()
    env.unlink()
    fleet.reconcile()
    assert env.is_symlink(), "drift: the shared .env link must be put back"
    assert fleet.live_release() == live


def test_a_failed_reload_is_retried_until_it_succeeds(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n",
                  reload=f"test -e {fleet.path('fpm-ok')} || {{ echo 'sudo: a password is required'; exit 1; }}")
    rc, out, err = fleet.reconcile()
    assert "reload command failed (exit 1)" in out, (out, err)
    live = fleet.live_release()

    def reloads() -> list[int]:
        return [(fleet.site(server).release(live) / "deployment.log").read_text().count("==> reload")
                for server in fleet.servers]

    assert reloads() == [1] * len(fleet.servers)
    # The next pass retries the reload and stays Degraded, with the reason.
    fleet.reconcile()
    view = fleet.status()
    assert (view["sync"], view["health"]) == ("Synced", "Degraded"), view
    assert "reload command failed (exit 1)" in view["message"], view
    assert reloads() == [2] * len(fleet.servers)
    fleet.touch("fpm-ok")
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    assert (fleet.status()["health"], reloads()) == ("Healthy", [3] * len(fleet.servers))
    # Settled: no more reloads.
    assert fleet.reconcile().rc == 0 and reloads() == [3] * len(fleet.servers)


def test_prune_keeps_the_same_releases_on_every_server(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n", keep=1)
    for n in range(3):
        if n:
            fleet.commit(f"v{n + 1}")
        assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    rc, out, err = fleet.cli("prune", "--keep", "1", "--site", fleet.domain)
    assert rc == 0, (out, err)
    kept = fleet.releases()
    assert all(releases == kept[0] for releases in kept), kept
    assert live in kept[0] and len(kept[0]) <= 2, kept


def test_a_release_left_half_built_by_a_dead_run_is_cleaned(fleet: Fleet) -> None:
    """What SIGTERM mid-build leaves (a release whose manifest still says `updating`, no lock
    held) is removed by the next pass, on every server."""
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    live = fleet.live_release()
    moment = parse_release(live)
    assert moment is not None
    half = release_name(moment + timedelta(seconds=1))  # a newer release name
    for server in fleet.servers:
        site = fleet.site(server)
        shutil.copytree(site.release(live), site.release(half), symlinks=True)
        manifest = site.manifest(live) | {"status": "updating", "finished_at": None}
        (site.release(half) / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert all(half in releases for releases in fleet.releases())
    assert fleet.reconcile().rc == 0
    assert fleet.live_release() == live
    assert fleet.releases() == [[live]] * len(fleet.servers), "the half-built release must be cleaned"


def test_adoption_after_the_database_is_lost(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    live, built = fleet.live_release(), fleet.releases()
    shutil.rmtree(fleet.state)
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    assert fleet.live_release() == live and fleet.releases() == built, "adopted, not rebuilt"
    view = fleet.status()
    assert (view["sync"], view["active_release"], view["active_commit"]) == ("Synced", live, fleet.head()), view
    assert [row["release"] for row in fleet.history() if row["is_active"]] == [live], fleet.history()


def test_a_pinned_release_failing_its_health_check_is_degraded_and_the_pin_holds(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n",
                  health={"command": f"test ! -e {fleet.path('sick')}", "retries": 0, "interval": 0.1})
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    fleet.commit("v2")
    assert fleet.reconcile().rc == 0
    fleet.touch("sick", on=fleet.last)
    assert fleet.cli("rollback", fleet.domain).rc == 0
    fleet.reconcile()
    assert fleet.live() == [first] * len(fleet.servers), "a pin is the operator's: never switched away from"
    view = fleet.status()
    assert (view["pinned"], view["health"]) == (first, "Degraded"), view
    assert "health check" in view["message"], view


def test_history_has_one_row_per_release_and_says_what_triggered_it(fleet: Fleet) -> None:
    first, second = fleet.two_releases()
    rows = fleet.history()
    assert [row["release"] for row in rows] == [second, first], rows
    assert [row["trigger"] for row in rows] == ["app commit", "first deploy"], rows
    assert [row["is_active"] for row in rows] == [True, False], rows


def test_history_names_the_cause_and_author_of_a_pin(fleet: Fleet) -> None:
    first, _ = fleet.two_releases()
    assert fleet.cli("rollback", fleet.domain).rc == 0
    assert fleet.reconcile().rc == 0
    row = next(row for row in fleet.history() if row["release"] == first)
    newest = row["activations"][0]
    assert newest["trigger"] == "rollback" and newest["requested_by"], row["activations"]
