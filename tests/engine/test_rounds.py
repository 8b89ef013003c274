"""Passes and server rounds (engine/rounds.py). A round probes a server once for all its sites and
hands each to the executor; a probe that fails is the outcome of every site of that server (and
only of that server); invalid declarations are reported and never touched; each site's outcome is
told as soon as it is known. Recording servers (tests/support/engine_rig.py).

A pin that just landed goes live in ONE remote command: the lock command re-checks the pinned
release (there, recorded a success) and switches to it before it probes. The rest of an
activation (reload, history) follows it. Real git repos, the local transport (the same shell text
as over SSH), the real store; the site link is read after every remote command."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.status import Health, Sync
from reconciler.engine import rounds
from reconciler.engine.converge import ssh_options
from reconciler.engine.desired import DesiredState
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.store import Store
from reconciler.engine.workbench import Workbench
from reconciler.errors import TransportError
from reconciler.remote.transport.base import Result
from reconciler.remote.transport.pool import TransportPool
from tests.support import app_commit, make_app_repo, make_decl_repo, write_site
from tests.support.config import reconcile, settings_for
from tests.support.engine_rig import Rig, engine_rig
from tests.support.recording import RecordingTransport, Sent

DOMAIN = "pin.example.com"
A, B, C = "a.example.com", "b.example.com", "c.example.com"


# -- rounds over recording servers ---------------------------------------------------------------

@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A and B on web-1, C on web-1 and web-2, and a file that is not a valid declaration."""
    with engine_rig(tmp_path, ("web-1", "web-2")) as made:
        common = {"base_path": str(made.base), "repository": str(made.app)}
        write_site(made.decl, A, server="web-1", **common)
        write_site(made.decl, B, server="web-1", **common)
        write_site(made.decl, C, servers=["web-1", "web-2"], **common)
        write_site(made.decl, "bad.example.com", raw='server = "web-2"\nbase_path = 3\n')
        yield made


def _pass(rig: Rig, only: str | None = None, dry_run: bool = False) -> dict[str, SiteOutcome]:
    outcomes = asyncio.run(rounds.run_pass(rig.bench, DesiredState(rig.bench), only, dry_run))
    assert [o.domain for o in outcomes] == sorted(o.domain for o in outcomes)
    return {o.domain: o for o in outcomes}


def test_a_pass_converges_every_site_and_reports_the_invalid_one(rig: Rig) -> None:
    outcomes = _pass(rig)
    assert {d: o.sync for d, o in outcomes.items()} == {
        A: Sync.SYNCED, B: Sync.SYNCED, C: Sync.SYNCED, "bad.example.com": Sync.INVALID}
    assert all(rig.live(s, C) is not None for s in ("web-1", "web-2")) and rig.live("web-1", A) is not None
    bad = rig.store.site("bad.example.com")
    assert bad is not None and bad["sync"] == Sync.INVALID and bad["message"] == outcomes["bad.example.com"].message


def test_a_pass_with_nothing_to_do_probes_each_server_once_per_round(rig: Rig) -> None:
    _pass(rig)
    rig.clear()
    assert {o.sync for o in _pass(rig).values()} == {Sync.SYNCED, Sync.INVALID}
    # web-1: one probe for A and B together, one of C's (its executor probes all its servers).
    assert (len(rig.on("web-1").sent), len(rig.on("web-2").sent)) == (2, 1)


def test_a_dry_run_records_nothing_and_changes_nothing(rig: Rig) -> None:
    outcomes = _pass(rig, dry_run=True)
    assert outcomes[A].planned and outcomes["bad.example.com"].sync == Sync.INVALID
    assert rig.store.site("bad.example.com") is None and rig.store.site(A) is None
    assert rig.live("web-1", A) is None


def test_only_one_site_is_converged_when_asked(rig: Rig) -> None:
    assert set(_pass(rig, only=B)) == {B}
    assert rig.live("web-1", B) is not None and rig.live("web-1", A) is None


def test_each_sites_outcome_is_told_as_soon_as_it_is_known(rig: Rig) -> None:
    decls = DesiredState(rig.bench).load()
    told: list[SiteOutcome] = []
    done = asyncio.run(rounds.converge_server(rig.bench, "", "web-1", [decls.sites[A], decls.sites[B]], decls.commit,
                                              on_outcome=told.append))
    assert done.reached and sorted(o.domain for o in told) == [A, B]
    assert sorted(told, key=lambda o: o.domain) == sorted(done.outcomes, key=lambda o: o.domain)


class Unreachable(RecordingTransport):
    async def run(self, command: str, *, timeout: float, stdin: str | None = None, tied: bool = False) -> Result:
        self.sent.append(Sent(command, stdin))
        raise TransportError(f"{self.name}: connection refused")


def test_a_failed_probe_is_every_site_of_that_server_in_the_rounds_result(rig: Rig) -> None:
    """Not told one by one: a failed probe's outcomes come at the end, all at once (the daemon settles them)."""
    rig.pool.servers["web-1"] = Unreachable("web-1", rig.on("web-1").root, str(rig.base))
    desired = DesiredState(rig.bench)
    decls = desired.load()
    told: list[str] = []
    done = asyncio.run(rounds.converge_server(rig.bench, "", "web-1", [decls.sites[A], decls.sites[B]], decls.commit,
                                              on_outcome=lambda o: told.append(o.domain)))
    assert not done.reached and len(rig.on("web-1").sent) == 1, "one probe for the server's sites"
    assert told == [] and sorted(o.domain for o in done.outcomes) == [A, B]
    for outcome in done.outcomes:
        assert (outcome.sync, outcome.health) == (Sync.UNKNOWN, Health.UNKNOWN)
        assert "connection refused" in outcome.message and outcome.backoff
        row = rig.store.site(outcome.domain)
        assert row is not None and "connection refused" in row["message"]
    assert rig.on("web-2").sent == []


# -- a pin that just landed (the eager path), on the local transport -------------------------------

def _deploy_two(tmp_path: Path) -> tuple[Path, Path, str, str]:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(app), script="true\n",
               reload="echo reloaded")
    settings = settings_for(decl, tmp_path / "state")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    first = os.readlink(base / DOMAIN).rsplit("/", 1)[-1]
    app_commit(app, "v2")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    second = os.readlink(base / DOMAIN).rsplit("/", 1)[-1]
    assert first != second
    return decl, base, first, second


def _eager_round(tmp_path: Path, decl: Path, base: Path) -> tuple[SiteOutcome, list[str], list[str]]:
    """The daemon's round for a pin that just landed; the site link after each remote command."""
    settings = settings_for(decl, tmp_path / "state")

    async def go() -> tuple[SiteOutcome, list[str], list[str]]:
        bench = Workbench(settings, Store(settings.db_path), TransportPool(ssh_options(settings)))
        transport = bench.pool.get("local")
        links: list[str] = []
        commands: list[str] = []
        run = transport.run

        async def recording(command: str, **kwargs: object) -> object:
            result = await run(command, **kwargs)  # type: ignore[arg-type]
            commands.append(command)
            links.append(os.readlink(base / DOMAIN).rsplit("/", 1)[-1])
            return result

        transport.run = recording  # type: ignore[method-assign]
        try:
            decls = DesiredState(bench).load()
            done = await rounds.converge_server(bench, "", "local", [decls.sites[DOMAIN]], decls.commit,
                                                eager={DOMAIN})
            return done.outcomes[0], links, commands
        finally:
            await bench.pool.close()
            bench.store.close()

    return asyncio.run(go())


def test_a_pin_is_live_after_the_first_remote_command(tmp_path: Path) -> None:
    decl, base, first, _second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(tmp_path / "app"),
               script="true\n", reload="echo reloaded", pin=first)
    outcome, links, _commands = _eager_round(tmp_path, decl, base)
    assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome.message
    assert links[0] == first, f"live after the first command: {links}"
    assert any(a.startswith("activate") or "rollback" in a for a in outcome.actions), outcome.actions
    # The activation's reload ran, and the lock is gone.
    log = (base / "deployments" / DOMAIN / first / "deployment.log").read_text()
    assert "reloaded" in log.split("==> reload")[-1]
    assert not (base / "deployments" / DOMAIN / ".reconciler-lock").exists()
    # A second round has nothing to switch.
    again, links, _ = _eager_round(tmp_path, decl, base)
    assert again.sync == "Synced" and links[0] == first and not any("rollback" in a for a in again.actions)


def test_the_lock_command_never_switches_to_a_failed_build(tmp_path: Path) -> None:
    decl, base, first, second = _deploy_two(tmp_path)
    manifest = base / "deployments" / DOMAIN / first / ".reconciler-release.json"
    manifest.write_text(manifest.read_text().replace('"status":"success"', '"status":"failed"'))
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(tmp_path / "app"),
               script="true\n", reload="echo reloaded", pin=first)
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert set(links) == {second}, f"the failed build went live: {links}"
    assert outcome.health == "Degraded" and "not a successful release" in outcome.message, outcome.message


def test_a_pin_that_fails_its_health_check_is_reported_and_holds(tmp_path: Path) -> None:
    decl, base, first, _second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(tmp_path / "app"),
               script="true\n", reload="echo reloaded", pin=first,
               health={"command": "echo down; exit 1", "retries": 0})
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert links[0] == first and links[-1] == first, links
    assert outcome.health == "Degraded" and "fails its health check" in outcome.message, outcome.message
    assert "pin holds" in outcome.message


def _site(tmp_path: Path, base: Path, **extra: object) -> dict[str, object]:
    return {"server": "local", "base_path": str(base), "repository": str(tmp_path / "app"), "script": "true\n",
            "reload": "echo reloaded", **extra}


def test_an_unpin_is_live_after_the_first_remote_command(tmp_path: Path) -> None:
    """Back to the branch head's build in the lock command: it checks that the head (one
    ls-remote) is still the commit that build was made from."""
    decl, base, first, second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, **_site(tmp_path, base, pin=first))
    _eager_round(tmp_path, decl, base)
    write_site(decl, DOMAIN, **_site(tmp_path, base))  # the unpin
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome.message
    assert links[0] == second, f"live after the first command: {links}"
    assert any("roll-forward" in a for a in outcome.actions), outcome.actions


def test_an_unpin_after_the_branch_moved_deploys_the_new_head_not_the_old_build(tmp_path: Path) -> None:
    decl, base, first, second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, **_site(tmp_path, base, pin=first))
    _eager_round(tmp_path, decl, base)
    head = app_commit(tmp_path / "app", "v3")  # the branch moved while pinned
    write_site(decl, DOMAIN, **_site(tmp_path, base))
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert outcome.sync == "Synced", outcome.message
    assert second not in links, f"the old build went live although the head moved: {links}"
    live = os.readlink(base / DOMAIN).rsplit("/", 1)[-1]
    assert live not in (first, second)
    manifest = (base / "deployments" / DOMAIN / live / ".reconciler-release.json").read_text()
    assert head in manifest
