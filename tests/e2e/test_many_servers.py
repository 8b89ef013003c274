"""One site on many servers: build everywhere, switch everywhere, or switch nowhere.

Two real sshds, each in its own mount namespace with its own directory at the same base_path
(tests/support/sshd.py `sshd_pair`), so the servers really are separate. The CLI runs in this process.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    LinkSampler,
    app_commit,
    cli_in_process,
    git,
    make_app_repo,
    make_decl_repo,
    wait_until,
    write_config,
    write_site,
)
from tests.support.process import Daemons
from tests.support.sshd import ServerPair

DOMAIN = "shop.example.com"


class Fleet:
    def __init__(self, tmp: Path, pair: ServerPair) -> None:
        self.pair = pair
        self.a, self.b = pair.servers
        self.app = make_app_repo(tmp / "app")
        self.decl = make_decl_repo(tmp / "decl")
        self.config = write_config(tmp / "reconciler.toml", repo=self.decl, state=tmp / "state", server=self.a)

    def declare(self, **fields: Any) -> None:
        write_site(self.decl, DOMAIN, servers=[self.a.destination, self.b.destination],
                   base_path=self.pair.base_path, repository=str(self.app), **fields)

    def cli(self, *args: str) -> tuple[int, str, str]:
        return cli_in_process(["--config", str(self.config), *args])

    def live(self) -> tuple[str | None, str | None]:
        return self.pair.site(self.a, DOMAIN).active(), self.pair.site(self.b, DOMAIN).active()

    def live_commits(self) -> tuple[str | None, str | None]:
        return (self.pair.site(self.a, DOMAIN, tolerant=True).live_commit(),
                self.pair.site(self.b, DOMAIN, tolerant=True).live_commit())

    def status(self) -> dict[str, Any]:
        rc, out, err = self.cli("status", "--json")
        assert rc == 0, err
        views: list[dict[str, Any]] = json.loads(out)
        return views[0]


@pytest.fixture(name="fleet")
def fleet_fixture(tmp_path: Path, sshd_pair: ServerPair, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return Fleet(tmp_path, sshd_pair)


def test_a_commit_is_built_on_every_server_and_both_switch_to_one_release(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    rc, out, err = fleet.cli("reconcile")
    assert rc == 0, (out, err)
    a, b = fleet.live()
    assert a is not None and a == b, "one release name on every server"
    head = git(fleet.app, "rev-parse", "HEAD")
    assert fleet.live_commits() == (head, head)
    second = app_commit(fleet.app, "v2")
    assert fleet.cli("reconcile")[0] == 0
    assert fleet.live_commits() == (second, second)
    assert fleet.live()[0] == fleet.live()[1] != a


def test_a_build_failing_on_one_server_switches_neither_then_retry_builds_only_there(fleet: Fleet) -> None:
    marker = fleet.pair.dir_of(fleet.b) / "broken"
    fleet.declare(script=f"test ! -e {fleet.pair.base_path}/broken  # only server b has it\n")
    assert fleet.cli("reconcile")[0] == 0
    before = fleet.live()
    good = fleet.live_commits()
    marker.touch()
    app_commit(fleet.app, "v2")
    rc, out, err = fleet.cli("reconcile")
    assert rc == 1, (out, err)
    assert fleet.live() == before and fleet.live_commits() == good, "no server may switch"
    view = fleet.status()
    assert view["sync"] == "Failed" and fleet.b.destination in view["message"], view
    built_on_a = fleet.pair.site(fleet.a, DOMAIN).releases()
    # No hot loop: the failure is remembered.
    assert fleet.cli("reconcile")[0] == 1 and fleet.pair.site(fleet.a, DOMAIN).releases() == built_on_a

    marker.unlink()
    rc, out, err = fleet.cli("retry", DOMAIN)
    assert rc == 0, (out, err)
    a, b = fleet.live()
    assert a == b and a not in before
    assert fleet.pair.site(fleet.a, DOMAIN).releases() == built_on_a, "server a must not rebuild"


def test_script_once_runs_on_exactly_one_server_per_deploy(fleet: Fleet) -> None:
    count = f"{fleet.pair.base_path}/once-count"
    fleet.declare(script="echo built\n", script_once=f"echo migrated >> {count}\n")
    assert fleet.cli("reconcile")[0] == 0
    app_commit(fleet.app, "v2")
    assert fleet.cli("reconcile")[0] == 0
    assert fleet.cli("reconcile")[0] == 0  # nothing to do: no third run
    assert (fleet.pair.dir_of(fleet.a) / "once-count").read_text().count("migrated") == 2, "once per deploy"
    assert not (fleet.pair.dir_of(fleet.b) / "once-count").exists()


def test_rollback_and_unpin_switch_every_server(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.cli("reconcile")[0] == 0
    first = fleet.live()[0]
    app_commit(fleet.app, "v2")
    assert fleet.cli("reconcile")[0] == 0
    second = fleet.live()[0]
    assert fleet.cli("rollback", DOMAIN)[0] == 0
    assert fleet.cli("reconcile")[0] == 0
    assert fleet.live() == (first, first)
    assert fleet.cli("unpin", DOMAIN)[0] == 0
    assert fleet.cli("reconcile")[0] == 0
    assert fleet.live() == (second, second)


def test_an_unreachable_server_blocks_every_switch(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.cli("reconcile")[0] == 0
    before = fleet.live()
    fleet.b.stop()
    app_commit(fleet.app, "v2")
    rc, out, err = fleet.cli("reconcile")
    assert rc == 1 and fleet.live() == before, (out, err)
    view = fleet.status()
    assert view["sync"] == "Unknown" and "nothing switches on any server" in view["message"], view


def test_status_shows_every_server_and_history_names_it(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.cli("reconcile")[0] == 0
    live = fleet.live()[0]
    view = fleet.status()
    assert view["server"] == f"{fleet.a.destination}, {fleet.b.destination}"
    assert view["servers"] == [{"server": fleet.a.destination, "active_release": live, "message": ""},
                               {"server": fleet.b.destination, "active_release": live, "message": ""}]
    rc, out, _ = fleet.cli("status")
    assert rc == 0 and "2/2 synced" in out, out
    # History has one entry for the release, naming each server's build of it.
    (row,) = json.loads(fleet.cli("history", DOMAIN, "--json")[1])
    assert [s["server"] for s in row["servers"]] == [fleet.a.destination, fleet.b.destination], row
    out = fleet.cli("status", DOMAIN)[1]
    assert f"{fleet.b.destination}: {live}" in out, out


def test_adding_a_server_builds_the_live_release_there_and_removing_one_leaves_it_alone(fleet: Fleet) -> None:
    count = f"{fleet.pair.base_path}/once-count"
    write_site(fleet.decl, DOMAIN, server=fleet.a.destination, base_path=fleet.pair.base_path,
               repository=str(fleet.app), script="echo built\n", script_once=f"echo migrated >> {count}\n")
    assert fleet.cli("reconcile")[0] == 0
    live = fleet.pair.site(fleet.a, DOMAIN).active()
    fleet.declare(script="echo built\n", script_once=f"echo migrated >> {count}\n")  # b joins
    rc, out, err = fleet.cli("reconcile")
    assert rc == 0, (out, err)
    assert fleet.live() == (live, live), "the new server gets the live release, under its name"
    assert not (fleet.pair.dir_of(fleet.b) / "once-count").exists(), "joining is not a new deploy"
    write_site(fleet.decl, DOMAIN, server=fleet.a.destination, base_path=fleet.pair.base_path,
               repository=str(fleet.app), script="echo built\n")  # b leaves
    rc, out, err = fleet.cli("reconcile")
    assert rc == 0 and fleet.pair.site(fleet.b, DOMAIN).active() == live, "b's files are left alone"
    assert "removed from servers: its files there are left alone" in fleet.status()["message"]


def test_a_health_check_failing_on_one_server_switches_every_server_back(fleet: Fleet) -> None:
    """The health check runs on every server; a failure on any one rolls
    back all of them, and the release is a failed build everywhere (no hot loop)."""
    check = {"command": f"test ! -e {fleet.pair.base_path}/sick", "retries": 0}
    fleet.declare(script="echo built\n", health=check)
    assert fleet.cli("reconcile")[0] == 0
    before, good = fleet.live(), fleet.live_commits()
    (fleet.pair.dir_of(fleet.b) / "sick").touch()
    app_commit(fleet.app, "v2")
    rc, out, err = fleet.cli("reconcile")
    assert rc == 1, (out, err)
    assert fleet.live() == before and fleet.live_commits() == good
    view = fleet.status()
    assert view["sync"] == "Failed" and f"health check failed after switch on {fleet.b.destination}" in \
        view["message"], view
    assert fleet.cli("reconcile")[0] == 1 and fleet.live() == before, "remembered: no second try"


def test_zero_downtime_on_every_server_and_a_server_lost_mid_build_switches_none(fleet: Fleet) -> None:
    slow = f"{fleet.pair.base_path}/slow"
    started = f"{fleet.pair.base_path}/started"
    fleet.declare(script=f"if [ -e {slow} ]; then touch {started}; sleep 60; fi\n")
    assert fleet.cli("reconcile")[0] == 0
    before = fleet.live()
    with LinkSampler(fleet.pair.site(fleet.a, DOMAIN).link) as on_a, \
            LinkSampler(fleet.pair.site(fleet.b, DOMAIN).link) as on_b:
        app_commit(fleet.app, "v2")
        assert fleet.cli("reconcile")[0] == 0
    assert on_a.samples and on_b.samples and not on_a.failures and not on_b.failures
    assert fleet.live()[0] == fleet.live()[1] != before[0]

    # Server b dies while it builds: no server switches.
    before = fleet.live()
    (fleet.pair.dir_of(fleet.b) / "slow").touch()
    app_commit(fleet.app, "v3")
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(fleet.cli("reconcile")[0]))
    runner.start()
    wait_until(lambda: (fleet.pair.dir_of(fleet.b) / "started").exists(), 60, "b's build to start")
    fleet.b.stop()
    runner.join(120)
    assert result == [1] and fleet.pair.site(fleet.a, DOMAIN).active() == before[0]


def test_prune_works_on_every_server_alike(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n", keep=1)
    for n in range(3):
        if n:
            app_commit(fleet.app, f"v{n + 1}")
        assert fleet.cli("reconcile")[0] == 0
    # The pass pruned as it went; a manual prune --keep 1 leaves the same single release on both.
    rc, out, err = fleet.cli("prune", "--keep", "1", "--site", DOMAIN)
    assert rc == 0 and f"on {fleet.a.destination}" in out and f"on {fleet.b.destination}" in out, (out, err)
    on_a, on_b = (fleet.pair.site(s, DOMAIN).releases() for s in (fleet.a, fleet.b))
    assert on_a == on_b and fleet.live()[0] in on_a and len(on_a) <= 2


def test_the_daemon_deploys_a_site_on_two_servers(fleet: Fleet, tmp_path: Path, daemons: Daemons) -> None:
    fleet.declare(script="echo built\n")
    launcher = daemons.launcher(tmp_path, fleet.config)
    launcher.start()
    both = fleet.pair.site(fleet.a, DOMAIN).link, fleet.pair.site(fleet.b, DOMAIN).link
    wait_until(lambda: all(link.is_symlink() for link in both), 60, "the first deploy on both servers",
               launcher.diagnostics)
    first = fleet.live()
    new = app_commit(fleet.app, "v2")
    wait_until(lambda: fleet.live_commits() == (new, new), 60, "the new commit on both servers",
               launcher.diagnostics)
    assert fleet.live()[0] == fleet.live()[1] != first[0]


def test_a_rollback_to_a_release_missing_on_one_server_is_refused(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n")
    assert fleet.cli("reconcile")[0] == 0
    first = fleet.live()[0]
    app_commit(fleet.app, "v2")
    assert fleet.cli("reconcile")[0] == 0
    assert first is not None
    shutil.rmtree(fleet.pair.site(fleet.b, DOMAIN).release(first))
    tip = git(fleet.decl, "rev-parse", "main")
    rc, out, err = fleet.cli("rollback", DOMAIN, first)
    assert rc == 1 and f"not a successful build on {fleet.b.destination}" in err, (out, err)
    assert git(fleet.decl, "rev-parse", "main") == tip


def test_between_deploys_health_is_reported_per_server_and_nothing_switches(fleet: Fleet) -> None:
    fleet.declare(script="echo built\n", health={"command": f"test ! -e {fleet.pair.base_path}/sick", "retries": 0})
    assert fleet.cli("reconcile")[0] == 0
    before = fleet.live()
    (fleet.pair.dir_of(fleet.b) / "sick").touch()
    fleet.cli("reconcile")
    view = fleet.status()
    assert (view["sync"], view["health"]) == ("Synced", "Degraded"), view
    assert f"{fleet.b.destination}: health check failing" in view["message"], view
    assert fleet.live() == before
    entry = next(e for e in view["servers"] if e["server"] == fleet.b.destination)
    assert "health check failing" in entry["message"]
