"""Behaviour: deploy windows (`[[window]]` in reconciler.toml). A deny window open now holds a new
commit: nothing is built (no new release directory on any server), the site is OutOfSync saying
until when, `reconcile` exits 1; `reconcile --override-window` deploys it, and history names who
ran it. A pin (a rollback) passes the window, unless the window says `pins = "hold"`. For a site
on one server and on two.

Real sshds, real git, the CLI in this process. The window is written around the real clock
(from an hour ago to two hours ahead, every day): what is asserted is the planner's answer for
it, never how long anything took.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.fleet import Fleet

pytestmark = pytest.mark.ssh

WHO = "Ops Person <ops@example.com>"


@pytest.fixture(autouse=True)
def _person(monkeypatch: pytest.MonkeyPatch) -> None:
    """Who runs the CLI, as history names them (cli/person.py: the git identity)."""
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ops Person")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "ops@example.com")


def freeze(fleet: Fleet, *, pins: str = "pass") -> str:
    """Append a deny window open now (every day, from an hour ago to two hours ahead, UTC) to the
    fleet's reconciler.toml; the message a held deploy then shows."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(hours=1), now + timedelta(hours=2)
    with fleet.config.open("a") as config:
        config.write(f'\n[[window]]\nkind = "deny"\nhours = "{start:%H:%M}-{end:%H:%M}"\n'
                     f'sites = ["*.example.com"]\npins = "{pins}"\n')
    return f"held by window until {end:%a %H:%M} UTC"


def test_a_deny_window_holds_a_new_commit_until_an_override_deploys_it_naming_who(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    held_message = freeze(fleet)
    fleet.commit("v2")
    built = fleet.releases()
    rc, out, err = fleet.reconcile()
    assert rc == 1, (out, err)
    assert held_message in out
    assert fleet.releases() == built, "no release directory is made on any server"
    assert fleet.live_release() == first
    view = fleet.status()
    assert (view["sync"], view["message"], view["desired_commit"]) == ("OutOfSync", held_message, fleet.head()), view
    assert view["active_release"] == first
    assert fleet.cli("reconcile", "--dry-run").rc == 1 and fleet.releases() == built

    rc, out, err = fleet.cli("reconcile", "--override-window")
    assert rc == 0, (out, err)
    second = fleet.live_release()
    assert second != first and fleet.live_commits() == [fleet.head()] * len(fleet.servers)
    newest = fleet.history()[0]
    assert (newest["release"], newest["status"]) == (second, "success"), newest
    assert (newest["trigger"], newest["requested_by"]) == ("override-window", WHO), newest
    view = fleet.status()
    assert (view["sync"], view["message"]) == ("Synced", ""), view
    # Deployed: the window has nothing left to hold, and the next pass does nothing.
    assert fleet.reconcile().rc == 0 and fleet.live_release() == second


def test_a_pin_passes_a_deny_window(fleet: Fleet) -> None:
    first, _ = fleet.two_releases()
    freeze(fleet)
    rc, out, err = fleet.cli("rollback", fleet.domain, first)
    assert rc == 0, (out, err)
    assert fleet.live_release() == first
    assert fleet.status()["sync"] == "Synced"


def test_a_window_that_holds_pins_holds_a_rollback_too(fleet: Fleet) -> None:
    first, second = fleet.two_releases()
    held_message = freeze(fleet, pins="hold")
    rc, out, err = fleet.cli("rollback", fleet.domain, first)
    assert rc == 1, (out, err)
    assert fleet.live_release() == second
    view = fleet.status()
    assert (view["sync"], view["message"], view["pinned"]) == ("OutOfSync", held_message, first), view
    assert fleet.cli("reconcile", "--override-window").rc == 0
    assert fleet.live_release() == first
