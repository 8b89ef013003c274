"""Sharding: `shard = "i/n"` instances split a fleet by server, over real SSH.

Two real sshds, each with its own filesystem at one base_path (tests/support/sshd.py `sshd_pair`), reached
through four ssh_config Host aliases (web-4 and web-1 are server A, web-7 and web-2 server B): the
shard goes by the server string as declared, so four names are four servers to the hashing.
Each instance is a Reconciler with its own state dir (so its own database and lock identity), the
two running their passes at once in one event loop. What they did is counted where it lands: the
release directories on the servers, a journal every build appends to, and each database's rows.

The per-site lock under a misconfigured overlap is also covered, with two real daemons, by
tests/remote/test_lock.py::test_two_daemons_never_build_a_site_at_once_and_both_converge.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.web import AppRunner, SockSite
from prometheus_client.parser import text_string_to_metric_families

from reconciler.config import Settings
from reconciler.core.shard import shard_of
from reconciler.engine.converge import Reconciler
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.store import Store
from reconciler.service.http.app import build_app
from reconciler.service.http.context import WebContext
from reconciler.service.metrics import PassStats
from tests.support import (
    STATUS_KEYS,
    app_commit,
    cli_in_process,
    free_port,
    git,
    make_app_repo,
    make_decl_repo,
    wait_until,
    write_config,
    write_site,
)
from tests.support.client import call
from tests.support.process import Daemons
from tests.support.sshd import ServerPair, SshServer

# domain -> its servers (aliases); its shard of 2 is its first server's.
SITES: dict[str, list[str]] = {
    "a4.example.com": ["web-4"],          # shard 1
    "b4.example.com": ["web-4"],          # shard 1
    "a7.example.com": ["web-7"],          # shard 1
    "a1.example.com": ["web-1"],          # shard 2
    "a2.example.com": ["web-2"],          # shard 2
    "b2.example.com": ["web-2"],          # shard 2
    "many1.example.com": ["web-7", "web-1"],  # shard 1, though web-1 is shard 2's
    "many2.example.com": ["web-1", "web-7"],  # shard 2, though web-7 is shard 1's
}
SHARD = {"web-4": 1, "web-7": 1, "web-1": 2, "web-2": 2, "down-2": 2}
DEAD = "dead.example.com"  # on down-2 (shard 2): nothing listens there


class Fleet:
    def __init__(self, tmp: Path, pair: ServerPair) -> None:
        self.tmp = tmp
        self.pair = pair
        self.a, self.b = pair.servers
        self.of = {"web-4": self.a, "web-1": self.a, "web-7": self.b, "web-2": self.b}
        self.app = make_app_repo(tmp / "app")
        self.decl = make_decl_repo(tmp / "decl")
        self.journal = tmp / "journal.txt"
        self.ssh_config = tmp / "ssh_config"
        self.ssh_config.write_text(
            self._host("web-4 web-1", self.a.port) + self._host("web-7 web-2", self.b.port)
            + self._host("down-2", free_port()))

    def _host(self, names: str, port: int) -> str:
        return f"Host {names}\n  HostName 127.0.0.1\n  Port {port}\n  User {self.a.user}\n"

    def declare(self, sites: dict[str, list[str]], **fields: Any) -> None:
        for domain, servers in sites.items():
            where: dict[str, Any] = {"server": servers[0]} if len(servers) == 1 else {"servers": servers}
            # Every build appends one line: the evidence of how often each site was built where.
            script = f'echo "{domain} $RECONCILER_RELEASE" >> {self.journal}\n{fields.pop("script", "")}'
            write_site(self.decl, domain, base_path=self.pair.base_path, repository=str(self.app), script=script,
                       **where, **fields)

    def settings(self, name: str, shard: str) -> Settings:
        return Settings(repo=self.decl, state_dir=self.tmp / name / "state", shard=shard, ssh_config=self.ssh_config,
                        identity_file=self.pair.identity_file, known_hosts=self.pair.known_hosts,
                        connect_timeout=5.0)

    def config(self, name: str, shard: str) -> Path:
        return write_config(self.tmp / name / "reconciler.toml", repo=self.decl, state=self.tmp / name / "state",
                            server=self.a, ssh_config=self.ssh_config, shard=shard, connect_timeout=5)

    def cli(self, name: str, shard: str, *args: str) -> tuple[int, str, str]:
        return cli_in_process(["--config", str(self.config(name, shard)), *args])

    def builds(self) -> Counter[str]:
        """How many times each site was built (one line per server a build ran on)."""
        lines = self.journal.read_text().splitlines() if self.journal.exists() else []
        return Counter(line.split()[0] for line in lines)

    def releases(self, domain: str, server: str) -> list[str]:
        return self.pair.site(self.of[server], domain).releases()

    def active(self, domain: str, server: str) -> str | None:
        return self.pair.site(self.of[server], domain).active()


def passes(*settings: Settings) -> list[tuple[dict[str, SiteOutcome], dict[str, str]]]:
    """One pass of each instance, all at once in one event loop: (outcomes by domain, skipped)."""

    async def one(s: Settings) -> tuple[dict[str, SiteOutcome], dict[str, str]]:
        reconciler = Reconciler(s, Store(s.db_path))
        try:
            outcomes = await reconciler.run_pass()
            return {o.domain: o for o in outcomes}, dict(reconciler.skipped)
        finally:
            await reconciler.close()
            reconciler.store.close()

    async def go() -> list[tuple[dict[str, SiteOutcome], dict[str, str]]]:
        return list(await asyncio.gather(*(one(s) for s in settings)))

    return asyncio.run(go())


def rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    if not settings.db_path.exists():
        return []
    with sqlite3.connect(settings.db_path) as db:
        return list(db.execute(sql))


def owned_by(shard: int) -> set[str]:
    return {d for d, servers in SITES.items() if SHARD[servers[0]] == shard}


@pytest.fixture(name="fleet")
def fleet_fixture(tmp_path: Path, sshd_pair: ServerPair, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return Fleet(tmp_path, sshd_pair)


def test_the_fixture_premise_each_alias_is_in_the_shard_named_here() -> None:
    assert {alias: shard_of(alias, 2) for alias in SHARD} == SHARD
    assert owned_by(1) and owned_by(2)


def test_two_shards_converge_every_site_exactly_once(fleet: Fleet) -> None:
    fleet.declare(SITES)
    fleet.declare({DEAD: ["down-2"]})
    one, two = fleet.settings("one", "1/2"), fleet.settings("two", "2/2")

    (out1, skipped1), (out2, skipped2) = passes(one, two)

    # Each instance worked on its shard's sites only, and skipped the other's, saying why.
    assert set(out1) == owned_by(1), out1
    assert set(out2) == owned_by(2) | {DEAD}, out2
    assert set(skipped1) == owned_by(2) | {DEAD} and set(skipped2) == owned_by(1)
    assert skipped1["a1.example.com"] == "not this shard: server web-1 is in shard 2/2 (this instance is 1/2)"
    assert skipped2["many1.example.com"] == (
        "not this shard: its first server web-7 is in shard 1/2 (this instance is 2/2)")
    assert all(o.sync == "Synced" for o in out1.values()), out1
    assert all(o.sync == "Synced" for d, o in out2.items() if d != DEAD), out2
    assert out2[DEAD].sync == "Unknown", out2[DEAD]  # its owner tried, and says why

    # Every site built exactly once on each of its servers, and live there.
    assert fleet.builds() == {d: len(servers) for d, servers in SITES.items()}
    for domain, servers in SITES.items():
        for server in servers:
            assert len(fleet.releases(domain, server)) == 1, (domain, server)
            assert fleet.active(domain, server) == fleet.releases(domain, server)[0]

    # Each database holds its own shard's sites, one successful deployment per site and server,
    # and never a row, an observation or a failure of the other shard's (down-2 was never probed
    # by shard 1: it would have failed).
    for settings, mine in ((one, owned_by(1)), (two, owned_by(2))):
        deployed = Counter(site for site, status in rows(settings, "select site, status from deployments")
                           if status == "success")
        assert deployed == {d: len(SITES[d]) for d in mine}, deployed
    assert {r[0] for r in rows(one, "select domain from sites")} == owned_by(1)
    assert {r[0] for r in rows(two, "select domain from sites")} == owned_by(2) | {DEAD}
    # Probed servers: shard 2's own servers never by shard 1 (web-1 only as many1's second server).
    assert not {r[0] for r in rows(one, "select name from servers")} & {"web-2", "down-2"}
    assert not {r[0] for r in rows(two, "select name from servers")} & {"web-4"}

    # Again, both at once: nothing to do, nothing built.
    (out1, _), (out2, _) = passes(one, two)
    assert all(o.sync == "Synced" and not o.actions for o in out1.values()), out1
    assert all(o.sync == "Synced" and not o.actions for d, o in out2.items() if d != DEAD), out2
    assert fleet.builds() == {d: len(servers) for d, servers in SITES.items()}


def test_an_overlap_of_shards_still_builds_each_site_once(fleet: Fleet) -> None:
    """A misconfiguration: one instance on 1/1 (everything) and one on 1/2, racing. The per-site
    lock (remote/lock.py) lets one of them build; the other waits (Progressing) or finds it done."""
    fleet.declare(SITES, script="sleep 0.5\n")  # builds long enough for the two to meet
    everything, first = fleet.settings("all", "1/1"), fleet.settings("one", "1/2")

    (out_all, skipped_all), (out_one, _) = passes(everything, first)

    assert skipped_all == {} and set(out_all) == set(SITES)
    assert set(out_one) == owned_by(1)
    for domain in owned_by(1):
        syncs = {out_all[domain].sync, out_one[domain].sync}
        assert syncs <= {"Synced", "Progressing"} and "Synced" in syncs, (out_all[domain], out_one[domain])
    assert fleet.builds() == {d: len(servers) for d, servers in SITES.items()}

    # Once the race is over both agree, and still nothing was built twice.
    (out_all, _), (out_one, _) = passes(everything, first)
    assert all(o.sync == "Synced" for o in [*out_all.values(), *out_one.values()]), (out_all, out_one)
    assert fleet.builds() == {d: len(servers) for d, servers in SITES.items()}
    for domain, servers in SITES.items():
        assert all(len(fleet.releases(domain, s)) == 1 for s in servers), domain


def test_the_cli_says_which_shard_it_is_and_leaves_the_others_alone(fleet: Fleet) -> None:
    fleet.declare(SITES)
    fleet.declare({DEAD: ["down-2"]})

    rc, out, err = fleet.cli("one", "1/2", "reconcile")
    assert rc == 0, out + err  # every site of shard 1 Synced; the dead server is shard 2's
    assert f"shard 1/2: {len(owned_by(2)) + 1} sites of other shards skipped" in out, out
    assert "a1.example.com" not in out

    rc, out, err = fleet.cli("one", "1/2", "status", "--json", "--exit-code")
    assert rc == 0, out + err  # another shard's Unknown site is not this instance's alarm
    views = {v["domain"]: v for v in json.loads(out)}
    assert set(views) == set(SITES) | {DEAD}
    for domain in owned_by(1):
        assert (views[domain]["shard"], views[domain]["skipped"], views[domain]["sync"]) == ("1/2", False, "Synced")
    for domain in owned_by(2) | {DEAD}:
        view = views[domain]
        assert (view["shard"], view["skipped"], view["sync"]) == ("2/2", True, "Unknown"), view
        assert view["message"].startswith("not this shard: "), view

    rc, out, err = fleet.cli("one", "1/2", "status")
    assert rc == 0, err
    assert out.splitlines()[0] == f"shard 1/2: {len(owned_by(1))} site(s) here, {len(owned_by(2)) + 1} skipped " \
                                  "(other shards)", out
    assert "SHARD" in out.splitlines()[1]
    line = next(x for x in out.splitlines() if x.startswith("a2.example.com"))
    assert "2/2" in line and "not this shard: server web-2 is in shard 2/2 (this instance is 1/2)" in line, line

    # Naming another shard's site: said, nothing done.
    rc, out, err = fleet.cli("one", "1/2", "reconcile", "--site", "a2.example.com")
    assert rc == 1 and "a2.example.com: not this shard: server web-2 is in shard 2/2" in err, out + err
    rc, out, err = fleet.cli("one", "1/2", "diff", "--site", "a2.example.com")
    assert rc == 1 and "not this shard" in err, out + err
    for command in ("retry", "redeploy"):
        rc, out, err = fleet.cli("one", "1/2", command, "a2.example.com", "--no-wait")
        assert rc == 1 and "not this shard" in err and "ask the instance of that shard" in err, out + err
    rc, out, err = fleet.cli("one", "1/2", "prune", "--site", "a2.example.com")
    assert rc == 0 and "a2.example.com: not this shard" in out, out + err
    rc, out, err = fleet.cli("one", "1/2", "prune")
    assert rc == 0 and f"{len(owned_by(2)) + 1} sites of other shards skipped" in out, out + err
    assert "a2.example.com" not in out and "a4.example.com: pruning nothing" in out, out
    assert fleet.builds() == {d: len(SITES[d]) for d in owned_by(1)}  # shard 2's sites: never built
    assert all(fleet.releases(d, SITES[d][0]) == [] for d in owned_by(2))
    assert rows(fleet.settings("one", "1/2"), "select site from requests") == []  # the refusals wrote nothing

    # --shard overrides the config file: the same config as shard 2/2 builds the rest.
    rc, out, err = cli_in_process(["--config", str(fleet.config("one", "1/2")), "--shard", "2/2", "status", "--json"])
    assert rc == 0, err
    assert {v["domain"] for v in json.loads(out) if not v["skipped"]} == owned_by(2) | {DEAD}


def test_a_shard_that_is_no_shard_is_a_config_error_and_nothing_runs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    sshd_session: SshServer) -> None:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    decl = make_decl_repo(tmp_path / "decl")
    state = tmp_path / "state"
    write_site(decl, "a1.example.com", server=sshd_session.destination, base_path=str(tmp_path / "srv"),
               repository=str(make_app_repo(tmp_path / "app")))
    for bad, says in (('"0/3"', "numbered 1 to 3"), ('"4/3"', "numbered 1 to 3"), ('"a/b"', 'is not "i/n"'),
                      ('"1/0"', "at least one shard"), ("2", "string")):
        config = tmp_path / "reconciler.toml"
        config.write_text(f'repo = "{decl}"\nstate_dir = "{state}"\nshard = {bad}\n')
        for command in (["reconcile"], ["status"], ["run"]):
            rc, out, err = cli_in_process(["--config", str(config), *command])
            assert rc == 2, (bad, command, out, err)
            assert "shard" in err and says in err, (bad, err)
    config.write_text(f'repo = "{decl}"\nstate_dir = "{state}"\n')
    rc, out, err = cli_in_process(["--config", str(config), "--shard", "3/2", "reconcile"])
    assert rc == 2 and "shard" in err and "numbered 1 to 2" in err, err
    assert not state.exists(), "a bad shard must change nothing"


def test_two_sharded_daemons_deploy_every_site_exactly_once(fleet: Fleet, daemons: Daemons) -> None:
    """The daemon's dispatch (the interval poll and the ref watcher) takes only its shard's sites."""
    fleet.declare(SITES)
    launchers = [daemons.launcher(fleet.tmp / name, fleet.config(name, shard))
                 for name, shard in (("one", "1/2"), ("two", "2/2"))]
    started = [launcher.start() for launcher in launchers]

    def diagnostics() -> str:
        return "\n".join([*(d.tail(30) for d in started), f"--- builds --- {fleet.builds()}"])

    def converged() -> bool:
        views = [launcher.status() for launcher in launchers]
        return all(views[shard - 1][d]["sync"] == "Synced" for shard in (1, 2) for d in owned_by(shard))

    wait_until(converged, 90, "both shards Synced", diagnostics)
    one, two = (launcher.status() for launcher in launchers)
    assert all(one[d]["skipped"] and one[d]["message"].startswith("not this shard") for d in owned_by(2)), one
    assert all(two[d]["skipped"] for d in owned_by(1)), two
    assert fleet.builds() == {d: len(servers) for d, servers in SITES.items()}, diagnostics()

    # A new app commit: each daemon moves its own sites, once each.
    app_commit(fleet.app, "v2")
    head = git(fleet.app, "rev-parse", "HEAD")
    wait_until(lambda: all(fleet.pair.site(fleet.of[s[0]], d, tolerant=True).live_commit() == head
                           for d, s in SITES.items()), 90, "every site on the new commit", diagnostics)
    assert fleet.builds() == {d: 2 * len(servers) for d, servers in SITES.items()}, diagnostics()
    for settings, mine in ((fleet.settings("one", "1/2"), owned_by(1)), (fleet.settings("two", "2/2"), owned_by(2))):
        assert {r[0] for r in rows(settings, "select distinct site from deployments")} == mine
    assert all(d.alive() for d in started), diagnostics()


def test_metrics_and_the_api_say_the_shard_and_count_the_skipped(tmp_path: Path) -> None:
    """The HTTP endpoint as the daemon serves it (no server is contacted: reading only)."""
    decl = make_decl_repo(tmp_path / "decl")
    for domain, servers in SITES.items():
        where: dict[str, Any] = {"server": servers[0]} if len(servers) == 1 else {"servers": servers}
        write_site(decl, domain, repository="git@github.com:acme/shop.git", **where)
    write_site(decl, "bad.example.com", server="web-2", keep=0)  # Invalid, and shard 2's
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    settings = Settings(repo=decl, state_dir=tmp_path / "state", shard="1/2", api_token="t0ken",
                        listen=f"127.0.0.1:{port}")

    async def go() -> tuple[str, list[dict[str, Any]], str]:
        store = Store(settings.db_path)
        reconciler = Reconciler(settings, store)
        decls = reconciler.load()
        ctx = WebContext(lambda: settings, store, reconciler.pool, PassStats(), lambda: decls, lambda domains: None,
                         asyncio.Event(), reconciler)
        runner = AppRunner(build_app(ctx), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await SockSite(runner, listener).start()
        try:
            def get(path: str) -> tuple[str, str]:
                answer = call(f"http://127.0.0.1:{port}{path}", token="t0ken", timeout=10)
                assert answer.status == 200, answer
                return answer.text, answer.headers.get("X-Reconciler-Shard", "")

            metrics, _ = await asyncio.to_thread(get, "/metrics")
            sites, header = await asyncio.to_thread(get, "/api/sites")
            return metrics, json.loads(sites), header
        finally:
            await runner.cleanup()
            await reconciler.close()
            store.close()

    metrics, sites, header = asyncio.run(go())
    samples = [s for family in text_string_to_metric_families(metrics) for s in family.samples]
    assert [(s.labels, s.value) for s in samples if s.name == "reconciler_shard_info"] == [({"shard": "1/2"}, 1.0)]
    skipped = owned_by(2) | {"bad.example.com"}
    assert [s.value for s in samples if s.name == "reconciler_sites_skipped"] == [len(skipped)]
    # Only this shard's sites are this instance's to report: summed over shards, each site once.
    assert {s.labels["domain"] for s in samples if s.name == "reconciler_site_info"} == owned_by(1)

    assert header == "1/2"
    views = {v["domain"]: v for v in sites}
    assert set(views) == set(SITES) | {"bad.example.com"}
    assert {d for d, v in views.items() if v["skipped"]} == skipped
    assert all(views[d]["shard"] == "2/2" for d in skipped) and all(views[d]["shard"] == "1/2" for d in owned_by(1))
    assert views["bad.example.com"]["message"] == ("not this shard: server web-2 is in shard 2/2 "
                                                   "(this instance is 1/2)")
    assert set(STATUS_KEYS) <= set(views["a4.example.com"]), "SPEC's keys all stay"
