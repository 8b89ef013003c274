"""The rollout executor (engine/executor.py) over recording servers on this host (tests/support/
recording.py): real commands on real files in a private mount namespace per server, no SSH, each
command recorded. Every test runs for a fleet of one and a fleet of two: one executor, one
`after_switch`, one lock per server per rollout, one history entry per switch."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.reasons import SwitchReason
from reconciler.core.status import Sync
from reconciler.engine import executor
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.store import Store
from reconciler.engine.workbench import Workbench
from reconciler.remote.protocol import locking
from tests.support import app_commit, make_app_repo, make_decl_repo, settings_for, site_declaration
from tests.support.recording import RecordingPool, RecordingTransport
from tests.support.sshd import mount_namespace_problem

DOMAIN = "shop.example.com"
SHAPES = {"one": ("web-1",), "two": ("web-1", "web-2")}


@dataclass
class Bench:
    tmp: Path
    servers: tuple[str, ...]
    app: Path
    base: Path
    pool: RecordingPool
    store: Store
    bench: Workbench

    def site(self, **fields: Any) -> SiteDeclaration:
        one = len(self.servers) == 1
        where: dict[str, Any] = {"server": self.servers[0]} if one else {"servers": list(self.servers)}
        return site_declaration(domain=DOMAIN, repository=str(self.app), base_path=str(self.base), **where, **fields)

    def converge(self, site: SiteDeclaration, **more: Any) -> SiteOutcome:
        return asyncio.run(executor.converge_site(self.bench, site, None, **more))

    def on(self, server: str) -> RecordingTransport:
        return self.pool.servers[server]

    def live(self, server: str) -> str | None:
        link = self.on(server).root / DOMAIN
        return Path(str(link.readlink())).name if link.is_symlink() else None

    def releases(self, server: str) -> list[str]:
        deployments = self.on(server).root / "deployments" / DOMAIN
        return sorted(p.name for p in deployments.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if deployments.is_dir() else []

    def activations(self) -> list[dict[str, Any]]:
        return self.store.activations(DOMAIN)

    def clear(self) -> None:
        for transport in self.pool.servers.values():
            transport.clear()


@pytest.fixture(params=SHAPES)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bench]:
    if (why := mount_namespace_problem()) is not None:
        pytest.skip(why)
    servers = SHAPES[request.param]
    base = tmp_path / "base"
    base.mkdir()
    pool = RecordingPool({s: RecordingTransport(s, tmp_path / "servers" / s, str(base)) for s in servers})
    settings = settings_for(make_decl_repo(tmp_path / "decl"), tmp_path / "state")
    store = Store(settings.db_path)
    bench = Workbench(settings, store, pool)  # type: ignore[arg-type]  # the engine asks only get/session_cap
    try:
        yield Bench(tmp_path, servers, make_app_repo(tmp_path / "app"), base, pool, store, bench)
    finally:
        store.close()


def test_a_deploy_takes_each_server_lock_once_and_goes_live_everywhere(rig: Bench) -> None:
    outcome = rig.converge(rig.site(script="echo built\n"))
    assert (outcome.sync, outcome.deployed) == (Sync.SYNCED, True), outcome
    names = {rig.live(s) for s in rig.servers}
    assert len(names) == 1 and None not in names, names
    for server in rig.servers:
        sent = rig.on(server).sent
        assert rig.on(server).count(locking.LOCK_ACQUIRED) == 1, [s.command[:60] for s in sent]
        if len(rig.servers) == 1:
            # A fleet of one: besides the probe, the lock, the build, the script, the finish (record,
            # switch, reload, unlock).
            assert len(sent) - 1 <= 4, [s.command[:80] for s in sent]


def test_a_second_pass_with_nothing_to_do_only_probes(rig: Bench) -> None:
    site = rig.site()
    rig.converge(site)
    rig.clear()
    outcome = rig.converge(site)
    assert outcome.sync == Sync.SYNCED and not outcome.applied, outcome
    assert [len(rig.on(s).sent) for s in rig.servers] == [1] * len(rig.servers)


def test_a_pin_switches_every_server_and_writes_one_history_entry(rig: Bench) -> None:
    site = rig.site()
    rig.converge(site)
    first = rig.live(rig.servers[0])
    app_commit(rig.app, "v2")
    rig.converge(site)
    assert rig.live(rig.servers[0]) != first
    assert first is not None
    before = len(rig.activations())
    outcome = rig.converge(rig.site(pin=first))
    assert outcome.sync == Sync.SYNCED and outcome.rolled_back, outcome
    assert all(rig.live(s) == first for s in rig.servers)
    added = rig.activations()[: len(rig.activations()) - before]
    assert [(a["release"], a["trigger"]) for a in added] == [(first, SwitchReason.ROLLBACK)], added


def test_a_pin_that_just_landed_is_switched_as_the_lock_is_taken(rig: Bench) -> None:
    """The shortcut is a step of the same executor: on a fleet of one the lock command switches,
    `after_switch` follows (history), and the rest of the rollout is planned from the facts read
    under the lock. A fleet of two switches all or nothing, after every lock is held."""
    site = rig.site()
    rig.converge(site)
    first = rig.live(rig.servers[0])
    assert first is not None
    app_commit(rig.app, "v2")
    rig.converge(site)
    rig.clear()
    outcome = rig.converge(rig.site(pin=first), shortcut=executor.Shortcut(first, SwitchReason.ROLLBACK))
    assert outcome.sync == Sync.SYNCED and all(rig.live(s) == first for s in rig.servers), outcome
    assert [a["trigger"] for a in rig.activations()[:1]] == [SwitchReason.ROLLBACK]
    assert len([a for a in rig.activations() if a["release"] == first]) == 1
    sent = rig.on(rig.servers[0]).sent
    if len(rig.servers) == 1:
        assert len(sent) <= 2 and locking.LOCK_ACQUIRED in sent[0].command, [s.command[:80] for s in sent]
    else:
        assert all(rig.on(s).count(locking.LOCK_ACQUIRED) == 1 for s in rig.servers)


def test_a_failing_script_once_never_goes_live_and_stays_failed(rig: Bench) -> None:
    site = rig.site(script_once="exit 3\n")
    outcome = rig.converge(site)
    assert outcome.sync == Sync.FAILED and "script_once failed" in outcome.message, outcome
    assert all(rig.live(s) is None for s in rig.servers)
    again = rig.converge(site)  # the review's blocker: the next pass switched without it
    assert again.sync == Sync.FAILED and all(rig.live(s) is None for s in rig.servers), again
    # Its output is in the deployment's log (`logs`, history) on the first server's row.
    rows = [r for r in rig.store.deployments(DOMAIN) if r["server"] == rig.servers[0]]
    assert rows and rows[0]["status"] == "failed" and "script_once failed" in rows[0]["message"], rows
    text = Path(rows[0]["local_log"]).read_text()
    assert "==> script_once" in text and "script_once failed: exit 3" in text, text


def test_script_once_runs_once_per_release_on_the_first_server(rig: Bench) -> None:
    marker = rig.tmp / "migrations"
    site = rig.site(script_once=f"echo ran >> {marker}\n")
    assert rig.converge(site).sync == Sync.SYNCED
    assert rig.converge(site).sync == Sync.SYNCED
    assert marker.read_text() == "ran\n"
    assert rig.on(rig.servers[0]).count("ran >>") == 1
    assert all(rig.on(s).count("ran >>") == 0 for s in rig.servers[1:])
    # Recorded in the store as on the first server's manifest; the others never owed it.
    once = {r["server"]: r["once"] for r in rig.store.deployments(DOMAIN)}
    assert once == {rig.servers[0]: "done", **{s: None for s in rig.servers[1:]}}, once


def test_a_failed_health_check_switches_every_server_back_with_one_history_entry(rig: Bench) -> None:
    site = rig.site()
    rig.converge(site)
    good = rig.live(rig.servers[0])
    app_commit(rig.app, "v2", {"public/sick": "1"})
    sick = rig.site(health={"command": "test ! -e public/sick", "retries": 0})
    outcome = rig.converge(sick)
    assert outcome.sync == Sync.FAILED and "health check failed after switch" in outcome.message, outcome
    assert all(rig.live(s) == good for s in rig.servers)
    back = [a for a in rig.activations() if a["trigger"] == SwitchReason.AUTO_ROLLBACK]
    assert len(back) == 1 and back[0]["release"] == good, back
    db = sqlite3.connect(rig.bench.settings.db_path)
    failed = db.execute("select count(*) from deployments where status = 'failed'").fetchone()[0]
    assert failed == len(rig.servers)


def test_an_owed_reload_is_retried_on_every_server(rig: Bench) -> None:
    flag = rig.tmp / "reload-ok"
    site = rig.site(reload=f"test -e {flag}")
    outcome = rig.converge(site)
    assert outcome.sync == Sync.SYNCED and "reload command failed" in outcome.message, outcome
    assert rig.store.reload_owed(DOMAIN) is not None
    flag.touch()
    rig.clear()
    again = rig.converge(site)
    assert (again.sync, again.message) == (Sync.SYNCED, ""), again
    assert rig.store.reload_owed(DOMAIN) is None
    assert all(rig.on(s).count(f"test -e {flag}") == 1 for s in rig.servers)

