"""service/daemon.py, the `Daemon` object in this process (its parts, not `run`): which sites a
moved declarations branch hurries, how an outcome is settled (a retry, a doubling backoff shown
in the site's message, a recovery that starts the backoff afresh), the one-line summary systemd
shows, SIGHUP's reload (a broken file keeps the old settings, repo and state_dir need a restart),
a failed round that is logged, and a stop that is said once. Each test builds the object
(`daemon_for`), drives one method on a real git repository and a real state database, and
never starts `run`; the daemon as a process is tests/e2e/test_daemon.py's."""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.config import Settings
from reconciler.core.shard import Shard
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import SiteOutcome
from reconciler.service.control import Wake
from reconciler.service.daemon import Daemon
from reconciler.service.systemd import Notifier
from tests.support import World, reconcile, settings_for, site_declaration, write_config
from tests.support.layers import write_defaults, write_template

DOMAIN = "shop.example.com"
OTHER = "blog.example.com"
THIRD = "docs.example.com"


def daemon_for(settings: Settings, notifier: Notifier | None = None, config_path: Path | None = None) -> Daemon:
    return Daemon(settings, config_path=str(config_path) if config_path else None, notifier=notifier)


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path) -> World:
    world = World.create(tmp_path)
    world.declare(DOMAIN, server="local", script="echo one\n")
    world.declare(OTHER, server="local", script="echo one\n")
    return world


@pytest.fixture(name="notify")
def notify_fixture() -> Iterator[tuple[Notifier, socket.socket]]:
    """A Notifier on a real datagram socket (a short path: the length of a Unix socket's is bounded)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as short, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(f"{short}/notify")
        listener.settimeout(5)
        yield Notifier({"NOTIFY_SOCKET": f"{short}/notify"}), listener


def received(listener: socket.socket) -> list[str]:
    """Every datagram sent so far."""
    listener.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(listener.recv(65536).decode())
    except BlockingIOError:
        return messages
    finally:
        listener.settimeout(5)


async def closed(daemon: Daemon) -> None:
    if daemon.scheduler is not None:
        daemon.scheduler.shutdown(wait=False)
    await daemon.reconciler.close()
    daemon.store.close()


# --- a moved declarations branch ----------------------------------------------------------------------


def test_a_moved_branch_hurries_only_the_sites_whose_declaration_changed(world: World) -> None:
    async def go() -> None:
        daemon = daemon_for(world.settings())
        try:
            daemon.decls = await daemon.reconciler.load_async()
            await daemon.declarations_moved()  # the same commit: nothing to do
            assert not daemon.wake.is_set() and daemon.queue.take_hurried({DOMAIN, OTHER}) == set()
            world.declare(OTHER, server="local", script="echo two\n")
            await daemon.declarations_moved()
            assert daemon.wake.is_set()
            assert daemon.queue.take_hurried({DOMAIN, OTHER}) == {OTHER}
        finally:
            await closed(daemon)

    asyncio.run(go())


def test_a_template_or_defaults_change_hurries_every_site_that_uses_it_and_no_other(world: World) -> None:
    """A commit that only edits templates/<name>.toml or sites.d/_defaults.toml changes the
    effective declaration of the sites that take keys from it: those are looked at again at
    once; a site that names no template is hurried only by the defaults."""
    write_template(world.decl, "laravel", 'script = "echo one\\n"\n')
    world.declare(DOMAIN, server="local", template="laravel")
    world.declare(OTHER, server="local", script="echo own\n")
    world.declare(THIRD, server="local", template="laravel")

    async def go() -> None:
        daemon = daemon_for(world.settings())
        try:
            daemon.decls = await daemon.reconciler.load_async()
            assert set(daemon.decls.sites) == {DOMAIN, OTHER, THIRD}
            write_template(world.decl, "laravel", 'script = "echo two\\n"\n')
            await daemon.declarations_moved()
            assert daemon.queue.take_hurried({DOMAIN, OTHER, THIRD}) == {DOMAIN, THIRD}
            daemon.decls = await daemon.reconciler.load_async()
            assert daemon.decls.sites[DOMAIN].script == "echo two\n"
            write_defaults(world.decl, "keep_failed = 1\n")
            await daemon.declarations_moved()
            assert daemon.queue.take_hurried({DOMAIN, OTHER, THIRD}) == {DOMAIN, OTHER, THIRD}
        finally:
            await closed(daemon)

    asyncio.run(go())


def test_a_moved_branch_hurries_none_of_another_shards_sites(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    shard = Shard.parse("1/2")
    servers = [f"web-{n}" for n in range(1, 20)]
    ours = next(server for server in servers if shard.owns([server]))
    theirs = next(server for server in servers if not shard.owns([server]))
    world.declare(DOMAIN, server=ours, base=Path("/srv"))
    world.declare(OTHER, server=theirs, base=Path("/srv"))

    async def go() -> set[str]:
        daemon = daemon_for(world.settings(shard="1/2"))
        try:
            await daemon.declarations_moved()  # the first read: every site of ours is news
            return daemon.queue.take_hurried({DOMAIN, OTHER})
        finally:
            await closed(daemon)

    assert asyncio.run(go()) == {DOMAIN}


def test_an_unreadable_branch_hurries_nothing_and_says_why(world: World, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        daemon = daemon_for(world.settings(branch="no-such-branch"))
        try:
            with caplog.at_level(logging.WARNING, logger="reconciler.service.daemon"):
                await daemon.declarations_moved()
            assert not daemon.wake.is_set() and daemon.decls is None
        finally:
            await closed(daemon)

    asyncio.run(go())
    messages = [r.getMessage() for r in caplog.records if r.name == "reconciler.service.daemon"]
    assert len(messages) == 1 and messages[0].startswith("declarations: "), messages


def test_the_dispatcher_outlives_unreadable_declarations_and_tells_systemd(
        world: World, notify: tuple[Notifier, socket.socket]) -> None:
    notifier, listener = notify

    async def go() -> None:
        daemon = daemon_for(world.settings(branch="no-such-branch"), notifier)
        try:
            dispatcher = asyncio.create_task(daemon.dispatch())
            daemon.request()
            status = await asyncio.wait_for(asyncio.to_thread(listener.recv, 65536), 30)
            assert status.decode().startswith("STATUS=declarations unreadable: "), status
            assert not dispatcher.done(), "the dispatcher waits for the next trigger"
            daemon.stop()
            await asyncio.wait_for(dispatcher, 30)
            assert received(listener) == ["STOPPING=1\nSTATUS=stopping"]
            daemon.stop()
            assert received(listener) == [], "a second stop says nothing more"
        finally:
            await closed(daemon)

    asyncio.run(go())


# --- settling an outcome --------------------------------------------------------------------------------


def test_temporary_errors_back_off_doubling_and_a_definite_outcome_starts_afresh(tmp_path: Path) -> None:
    site = site_declaration(domain=DOMAIN, server="web-1")
    failing = SiteOutcome(DOMAIN, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "web-1 unreachable", retry_after=5.0,
                          backoff=True)

    async def go() -> list[str]:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state"))
        messages = []
        try:
            for outcome in (failing, failing, failing,
                            SiteOutcome(DOMAIN, "web-1", Sync.SYNCED, Health.HEALTHY, "up to date"), failing):
                daemon._settle(site, outcome)
                row = daemon.store.site(DOMAIN)
                assert row is not None
                messages.append(row["message"])
            return messages
        finally:
            await closed(daemon)

    messages = asyncio.run(go())
    assert messages[:3] == ["web-1 unreachable (retrying in 5s)", "web-1 unreachable (retrying in 10s)",
                            "web-1 unreachable (retrying in 20s)"]
    assert messages[4] == "web-1 unreachable (retrying in 5s)", "a recovery forgets the backoff"


def test_a_site_the_command_line_wakes_goes_now_though_it_was_backing_off(tmp_path: Path) -> None:
    """`retry --no-wait` or a CLI rollback wakes the daemon for a site that is backing off (its
    server was down): the site is ready at once, not after its wait; one of another shard is
    refused with why."""
    site = site_declaration(domain=DOMAIN, server="web-1")
    failing = SiteOutcome(DOMAIN, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "web-1 unreachable", retry_after=60.0,
                          backoff=True)

    async def go() -> tuple[set[str], set[str], str | None]:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state"))
        try:
            now = asyncio.get_running_loop().time()
            daemon._settle(site, failing)
            daemon.queue.request({DOMAIN})
            waiting = daemon.queue.take_ready({DOMAIN}, now + 1.0)
            refused = daemon._woken(Wake((DOMAIN,)))
            return waiting, daemon.queue.take_ready({DOMAIN}, now + 1.0), refused
        finally:
            await closed(daemon)

    waiting, woken, refused = asyncio.run(go())
    assert waiting == set(), "backing off: not before its 60 s"
    assert woken == {DOMAIN} and refused is None


def test_a_retry_after_requests_the_site_again_once_it_is_over(tmp_path: Path) -> None:
    site = site_declaration(domain=DOMAIN, server="web-1")
    locked = SiteOutcome(DOMAIN, "web-1", Sync.PROGRESSING, Health.HEALTHY, "locked by another run", retry_after=0.0)

    async def go() -> set[str]:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state"))
        try:
            daemon.queue.take_ready(set(), 0.0)  # the first full pass is taken
            daemon._settle(site, locked)
            assert not daemon.queue.pending, "asked for when the wait is over, not at once"
            await asyncio.wait_for(daemon.wake.wait(), 30)
            return daemon.queue.take_ready({DOMAIN, OTHER}, 0.0)
        finally:
            await closed(daemon)

    assert asyncio.run(go()) == {DOMAIN}, "only that site is asked for"


def test_a_site_held_by_a_deploy_window_is_requested_again_as_the_window_opens(tmp_path: Path) -> None:
    """Held until a moment before the next interval poll: the site is asked for then, not at once
    and not only at the poll. Held past the next poll: no timer (the poll looks anyway)."""
    site = site_declaration(domain=DOMAIN, server="web-1")

    async def go() -> tuple[set[str], bool]:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state", interval=3600.0))
        try:
            daemon.queue.take_ready(set(), 0.0)  # the first full pass is taken
            now = daemon.reconciler.clock()
            far = SiteOutcome(DOMAIN, "web-1", Sync.OUT_OF_SYNC, Health.HEALTHY, "held by window until Mon 09:00 UTC",
                              held_until=now + timedelta(hours=2))
            daemon._settle(site, far)
            far_timer = bool(asyncio.get_running_loop()._scheduled)  # type: ignore[attr-defined]
            soon = SiteOutcome(DOMAIN, "web-1", Sync.OUT_OF_SYNC, Health.HEALTHY, "held by window until Mon 09:00 UTC",
                               held_until=now + timedelta(seconds=0.2))
            daemon._settle(site, soon)
            assert not daemon.queue.pending, "asked for when the window opens, not at once"
            await asyncio.wait_for(daemon.wake.wait(), 30)
            return daemon.queue.take_ready({DOMAIN, OTHER}, 0.0), far_timer
        finally:
            await closed(daemon)

    woken, far_timer = asyncio.run(go())
    assert woken == {DOMAIN} and not far_timer


def test_a_verdict_is_logged_when_it_changes_and_at_the_level_it_deserves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state"))
        try:
            with caplog.at_level(logging.INFO, logger="reconciler.service.daemon"):
                for _ in range(2):
                    daemon._report(SiteOutcome(DOMAIN, "web-1", Sync.FAILED, Health.HEALTHY, "build failed"))
                daemon._report(SiteOutcome(DOMAIN, "web-1", Sync.SYNCED, Health.HEALTHY, ""))
        finally:
            await closed(daemon)

    asyncio.run(go())
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "reconciler.service.daemon"]
    assert lines == [("WARNING", f"{DOMAIN}: Failed/Healthy - build failed"), ("INFO", f"{DOMAIN}: Synced/Healthy")]


def test_a_round_that_raises_is_logged_and_forgotten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> int:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state"))

        async def broken() -> None:
            raise RuntimeError("a bug in a round")

        try:
            with caplog.at_level(logging.ERROR, logger="reconciler.service.daemon"):
                daemon._spawn(broken())
                await asyncio.wait(list(daemon.tasks), timeout=30)
                await asyncio.sleep(0)
            return len(daemon.tasks)
        finally:
            await closed(daemon)

    assert asyncio.run(go()) == 0
    failed = [r for r in caplog.records if r.getMessage() == "a server round failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None and "a bug in a round" in str(failed[0].exc_info[1])


# --- the summary systemd shows ----------------------------------------------------------------------------


def test_the_summary_counts_declared_sites_by_their_sync(world: World) -> None:
    async def go() -> list[str]:
        daemon = daemon_for(world.settings())
        try:
            before = daemon.summary()
            daemon.store.update_site(DOMAIN, server="local", sync=Sync.SYNCED, health=Health.HEALTHY, message="")
            daemon.store.update_site("gone.example.com", server="local", sync=Sync.FAILED, health=Health.HEALTHY,
                                     message="")
            rows_only = daemon.summary()
            daemon.decls = await daemon.reconciler.load_async()
            return [before, rows_only, daemon.summary()]
        finally:
            await closed(daemon)

    before, rows_only, declared = asyncio.run(go())
    assert before == "no sites"
    assert rows_only == "1 synced, 1 failed", "before the declarations are read: the state database's sites"
    assert declared == "1 synced, 1 unknown", "a site no longer declared is not counted; one never seen is Unknown"


def test_the_summary_of_a_shard_says_so(tmp_path: Path) -> None:
    async def go() -> str:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state", shard="2/3"))
        try:
            return daemon.summary()
        finally:
            await closed(daemon)

    assert asyncio.run(go()) == "shard 2/3: no sites; 0 skipped (other shards)"


# --- SIGHUP -------------------------------------------------------------------------------------------


def test_reload_applies_a_new_file_but_keeps_repo_and_state_dir(world: World, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(world.config, repo=world.decl, state=world.state, interval=60)

    async def go() -> None:
        daemon = daemon_for(Settings(repo=world.decl, state_dir=world.state, interval=60, allow_local=True),
                            config_path=config)
        try:
            daemon._schedule()
            daemon.queue.take_ready(set(), 0.0)  # the first full pass is taken
            config.write_text(config.read_text() + "concurrency = [\n")  # a broken file
            daemon.reload()
            assert daemon.settings.interval == 60 and not daemon.queue.pending, "nothing changed"
            write_config(config, repo=world.tmp / "elsewhere", state=world.state, interval=120)
            daemon.reload()
            assert daemon.settings.interval == 120 and daemon.reconciler.settings.interval == 120
            assert daemon.settings.repo == world.decl, "the repository needs a restart"
            assert daemon.scheduler is not None
            assert daemon.scheduler.get_job("poll").trigger.interval.total_seconds() == 120
            assert daemon.queue.pending and daemon.wake.is_set(), "a reload asks for a full pass"
        finally:
            await closed(daemon)

    with caplog.at_level(logging.INFO, logger="reconciler.service.daemon"):
        asyncio.run(go())
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "reconciler.service.daemon"]
    assert messages[0][0] == "ERROR" and messages[0][1].startswith("SIGHUP: configuration not reloaded: "), messages
    assert ("WARNING", "SIGHUP: repo and state_dir changes need a restart; keeping the old ones") in messages
    assert messages[-1] == ("INFO", "configuration reloaded")


# --- retention ----------------------------------------------------------------------------------------


def test_the_daemon_forgets_history_older_than_retention_days_at_start_and_on_its_schedule(world: World) -> None:
    settings = settings_for(world.decl, world.state, retention_days=30)
    reconcile(settings)
    world.declare(DOMAIN, server="local", script="echo two\n")
    reconcile(settings)

    async def go() -> None:
        daemon = daemon_for(settings)
        try:
            old = daemon.store.deployments(DOMAIN)[-1]
            daemon.store.update_deployment(old["id"], deployment_path=None, started_at="2020-01-01T00:00:00Z",
                                           completed_at="2020-01-01T00:00:00Z")
            daemon._schedule()
            assert daemon.scheduler is not None and daemon.scheduler.get_job("retention") is not None
            for _ in range(200):  # the first run is due at once
                if daemon.store.deployment(old["id"]) is None:
                    break
                await asyncio.sleep(0.05)
            assert daemon.store.deployment(old["id"]) is None
            assert [row["id"] for row in daemon.store.deployments(OTHER)], "the latest rows stay"
            daemon.settings = daemon.settings.model_copy(update={"retention_days": None})
            daemon._schedule()
            assert daemon.scheduler.get_job("retention") is None, "the setting removed: no more runs"
        finally:
            await closed(daemon)

    asyncio.run(go())


def test_a_site_an_operator_acts_on_through_the_api_goes_now_and_a_landed_pin_is_hurried(tmp_path: Path) -> None:
    """The daemon's ask, as the API and the dashboard use it: a backing-off site is ready at once,
    and a pin or unpin that just landed is hurried (the lock command's fast path); a retry is not."""
    site = site_declaration(domain=DOMAIN, server="web-1")
    failing = SiteOutcome(DOMAIN, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "web-1 unreachable", retry_after=60.0,
                          backoff=True)

    async def go() -> list[tuple[set[str], set[str]]]:
        daemon = daemon_for(settings_for(tmp_path, tmp_path / "state"))
        try:
            now = asyncio.get_running_loop().time()
            seen = []
            for landed in (False, True):
                daemon._settle(site, failing)
                daemon.queue.request({DOMAIN})
                assert daemon.queue.take_ready({DOMAIN}, now + 1.0) == set(), "backing off"
                daemon.asked({DOMAIN}, landed)
                seen.append((daemon.queue.take_ready({DOMAIN}, now + 1.0), daemon.queue.take_hurried({DOMAIN})))
                daemon.queue.done({DOMAIN})  # its round ended
            return seen
        finally:
            await closed(daemon)

    assert asyncio.run(go()) == [({DOMAIN}, set()), ({DOMAIN}, {DOMAIN})]
