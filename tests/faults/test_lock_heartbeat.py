"""The site lock's heartbeat: a live lock is never "stale".

Before, a lock was stale `deploy_timeout + 2 x command_timeout` after its `mkdir`, while a deploy
gives its build and its script `deploy_timeout` EACH: a second reconciler (an operator's CLI
`reconcile`, an overlapping shard) took over the lock of a legitimate deploy, removed its release
under the running script, and deployed its own. Now the owner refreshes the lock while it holds
it (remote/lock.py: from inside the long steps' own commands on the server, and from a task of
`lock.held` between them), and a lock is stale once that heartbeat is older than a bound made of
command timeouts.

Real parts: the reconciler as a real process, a real sshd (one server, and two with a site on
both: tests/support/sshd.py `sshd_pair`), real git behind a wrapper that slows the mirror's first clone,
real scripts. The takeover is reproduced at a small scale:
`command_timeout = 1`, each long step within `deploy_timeout`, both together far beyond the old
bound. Every wait is bounded polling; no assertion is about how fast anything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from reconciler.core.facts import BranchHead, ReleaseFacts, SiteFacts
from reconciler.core.layout import MANIFEST_NAME, SitePaths
from reconciler.core.manifest import Manifest
from reconciler.core.plan import (
    Clean,
    Deploy,
    FailureMemory,
    Takeover,
    interrupted_releases,
    owner_may_live,
)
from reconciler.core.rollout import plan_site
from reconciler.core.status import Sync
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from reconciler.errors import SiteLocked
from reconciler.remote import lock
from reconciler.remote.protocol import locking, seam
from reconciler.remote.transport import Transport
from reconciler.remote.transport.local import LocalTransport
from reconciler.remote.transport.ssh import SshOptions, SshTransport
from tests.support import World, cli_in_process, site_declaration, wait_until, write_config, write_site
from tests.support.process import reconciler_process
from tests.support.sshd import ServerPair, SshServer

DOMAIN = "l.example.com"
DEPLOY_TIMEOUT = 10.0
COMMAND_TIMEOUT = 1.0
CLONE_SECONDS = 7   # the mirror's first clone (`git clone --bare`): within DEPLOY_TIMEOUT
SCRIPT_SECONDS = 8  # the deploy script: within DEPLOY_TIMEOUT; with the clone, beyond OLD_BOUND
OLD_BOUND = DEPLOY_TIMEOUT + 2 * COMMAND_TIMEOUT  # when the lock was "stale" before (from its mkdir)
BOUND = lock.stale_bound(COMMAND_TIMEOUT)
SCRIPT = f"touch script-started\nsleep {SCRIPT_SECONDS}\ntouch script-ended\n"
T = TypeVar("T")


# --- servers -----------------------------------------------------------------------------------------


@pytest.fixture(name="server", params=["local", pytest.param("ssh", marks=pytest.mark.ssh)])
def server_fixture(request: pytest.FixtureRequest) -> SshServer | None:
    """Where the site lives: this machine (`server = "local"`), or a real sshd of its own (its
    authorized_keys are rewritten by some tests: never the session's shared one)."""
    if request.param == "local":
        return None
    server: SshServer = request.getfixturevalue("sshd")
    return server


def slow_git(directory: Path) -> Path:
    """A `git` that takes CLONE_SECONDS longer for `clone --bare` (the mirror's first clone)."""
    real = shutil.which("git")
    assert real is not None
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "git"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" --bare "*) sleep {CLONE_SECONDS} ;; esac\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return directory


def sessions_with_path(server: SshServer, directory: Path, tmp: Path) -> None:
    """Every SSH session of `server` runs with `directory` first on its PATH (a forced command in
    authorized_keys that then runs what was asked)."""
    wrapper = tmp / f"session-{server.port}.sh"
    wrapper.write_text(f'#!/bin/sh\nPATH={directory}:$PATH; export PATH\nexec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
    wrapper.chmod(0o755)
    keys = [line for line in server.authorized_keys.read_text().splitlines() if line.strip()]
    server.authorized_keys.write_text("".join(f'command="{wrapper}" {key}\n' for key in keys))


def owner_since(paths: SitePaths) -> float | None:
    """When the lock's owner took it (its owner file), or None while there is no lock."""
    try:
        data = json.loads((Path(paths.lock) / lock.OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    since = data.get("since")
    return float(since) if isinstance(since, int | float) else None


def manifest_status(release: Path) -> str:
    return str(json.loads((release / MANIFEST_NAME).read_text())["status"])


def releases(paths: SitePaths) -> list[str]:
    deployments = Path(paths.deployments)
    return sorted(p.name for p in deployments.iterdir() if p.name[:1].isdigit()) if deployments.is_dir() else []


def start_first(world: World, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The first reconciler: `reconcile` as a real process in a session of its own."""
    return reconciler_process(*world.flags(), "reconcile", cwd=world.tmp, env=env, start_new_session=True)


def finish(process: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out + err


def past_the_old_bound(paths: SitePaths, *more: SitePaths) -> float:
    """Wait until every lock in `paths, *more` has been held longer than the old bound (from its
    owner's `since`); returns when the first was taken."""
    sinces: list[float] = []
    for each in (paths, *more):
        since = wait_until(lambda each=each: owner_since(each), 60, f"the first reconciler's lock on {each.base_path}")
        sinces.append(since)
    # The old rule compared whole seconds (`date +%s` minus the dir's mtime) with `>`: a second more.
    deadline = max(sinces) + OLD_BOUND + 1.5
    while time.time() < deadline:
        time.sleep(0.05)
    return min(sinces)


# --- 1. the takeover scenario: a second reconcile during a long, legitimate deploy ---------------


def test_a_second_reconcile_during_a_long_deploy_does_not_take_its_lock_over(
        server: SshServer | None, tmp_path: Path) -> None:
    """The takeover scenario: the first deploy's clone and script each stay within
    `deploy_timeout`, together beyond the old bound. A second `reconcile` (same config, as an
    operator would run it) started past that bound must find the site locked (Progressing),
    leave the running deploy's release alone, and the first deploy must succeed."""
    world = World.create(tmp_path, server, deploy_timeout=DEPLOY_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    world.declare(DOMAIN, script=SCRIPT)
    paths = SitePaths(str(world.base), DOMAIN)
    wrap = slow_git(tmp_path / "wrap")
    env = None
    if server is None:
        env = {"PATH": f"{wrap}{os.pathsep}{os.environ['PATH']}"}
    else:
        sessions_with_path(server, wrap, tmp_path)

    first = start_first(world, env)
    try:
        past_the_old_bound(paths)
        building = releases(paths)
        assert len(building) == 1, building
        release = Path(paths.release(building[0]))
        if not (release / "script-started").exists() or (release / "script-ended").exists():
            pytest.fail("the first deploy is not in its script past the old bound: this machine is too slow or "
                        f"too fast for the scenario (releases {building}, first: {finish(first)[1]})")
        first_owner = (Path(paths.lock) / lock.OWNER_FILE).read_text()

        rc, out, err = world.run_cli("reconcile")

        assert "Progressing" in out and "locked by" in out, out + err
        assert rc == 1, out + err
        assert releases(paths) == building, "the running deploy's release was removed or another one built"
        assert manifest_status(release) == "updating"
        assert (Path(paths.lock) / lock.OWNER_FILE).read_text() == first_owner, "the lock changed hands"
    finally:
        rc, out = finish(first)
    assert rc == 0, out
    assert f"{DOMAIN}: Synced" in out, out
    assert releases(paths) == building
    assert world.active(DOMAIN) == building[0]
    assert manifest_status(release) == "success"
    assert (release / "script-ended").exists()
    assert not Path(paths.lock).exists()


def test_a_second_reconcile_during_a_two_server_build_does_not_take_a_lock_over(
        sshd_pair: ServerPair, tmp_path: Path) -> None:
    """The same on a site on two servers: phase 1 holds both servers' locks while it builds. The
    server whose build ends first holds an idle lock until the other's is built; the heartbeat
    task of `lock.held` keeps that one fresh (no command runs there). That server's lock is the
    one a second reconciler tries first (locks are taken in server order)."""
    fast, slow = sorted(sshd_pair.servers, key=lambda s: s.destination)
    world = World.create(tmp_path, fast, base=Path(sshd_pair.base_path), deploy_timeout=DEPLOY_TIMEOUT,
                         command_timeout=COMMAND_TIMEOUT)
    script = f"if [ -e {sshd_pair.base_path}/slow ]; then sleep {SCRIPT_SECONDS}; fi\n"
    write_site(world.decl, DOMAIN, servers=[fast.destination, slow.destination], base_path=sshd_pair.base_path,
               repository=str(world.app), script=script)
    (sshd_pair.dir_of(slow) / "slow").touch()
    sessions_with_path(slow, slow_git(tmp_path / "wrap"), tmp_path)
    on = {s: SitePaths(str(sshd_pair.dir_of(s)), DOMAIN) for s in (fast, slow)}

    first = start_first(world)
    try:
        past_the_old_bound(on[fast], on[slow])
        building = {s: releases(on[s]) for s in (fast, slow)}
        assert all(len(names) == 1 for names in building.values()), building
        if Path(on[slow].release(building[slow][0]), MANIFEST_NAME).read_text().find('"updating"') < 0:
            pytest.fail(f"the slow server's build is over past the old bound: {finish(first)[1]}")
        owners = {s: (Path(on[s].lock) / lock.OWNER_FILE).read_text() for s in (fast, slow)}

        rc, out, err = world.run_cli("reconcile")

        assert "Progressing" in out and "locked by" in out, out + err
        assert {s: releases(on[s]) for s in (fast, slow)} == building
        assert {s: (Path(on[s].lock) / lock.OWNER_FILE).read_text() for s in (fast, slow)} == owners
    finally:
        rc, out = finish(first)
    assert rc == 0, out
    assert f"{DOMAIN}: Synced" in out, out
    for s in (fast, slow):
        assert releases(on[s]) == building[s]
        assert sshd_pair.site(s, DOMAIN).active() == building[s][0]
        assert not Path(on[s].lock).exists()


def test_long_steps_heartbeat_without_a_command_of_their_own(server: SshServer | None, tmp_path: Path) -> None:
    """A deploy whose build and script each last several heartbeat intervals sends what a deploy
    always sent (the lock, the build, the script, the finish; the pass's probe before
    them): the long steps refresh the lock from inside their own commands, and the holder's task
    only speaks up after an interval with no step running, which this deploy never has."""
    world = World.create(tmp_path, server, deploy_timeout=DEPLOY_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    world.declare(DOMAIN, script=f"sleep {4 * lock.heartbeat_interval(COMMAND_TIMEOUT)}\n")
    paths = SitePaths(str(world.base), DOMAIN)
    sent: list[int] = []

    async def one_pass() -> str:
        settings = world.settings(deploy_timeout=DEPLOY_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
        reconciler = Reconciler(settings, Store(settings.db_path))
        try:
            (outcome,) = await reconciler.run_pass()
            sent.append(reconciler.pool.round_trips)
            return f"{outcome.sync} {outcome.message}"
        finally:
            await reconciler.close()
            reconciler.store.close()

    assert asyncio.run(one_pass()).startswith("Synced")
    assert sent == [1 + 4], sent
    assert not Path(paths.lock).exists()


# --- 2. a dead owner's lock is still taken over, once its heartbeat stops -----------------------------


def test_a_dead_owners_lock_is_taken_over_after_the_heartbeat_bound(server: SshServer | None, tmp_path: Path) -> None:
    """The first reconciler and its remote command are killed (-9) mid-script. Another instance
    finds the lock fresh at first (Progressing), then, once the heartbeat is older than the bound
    (seconds, where the old rule waited `deploy_timeout`: a minute here), takes it over and
    deploys. The dead owner's half-built release is left alone by that pass (its owner was silent
    for barely the bound: core.plan.owner_may_live) and cleaned by the next."""
    world = World.create(tmp_path, server, deploy_timeout=60, command_timeout=COMMAND_TIMEOUT)
    hold = tmp_path / "hold"  # the first deploy's script sleeps while it exists; the second's does not
    hold.touch()
    world.declare(DOMAIN, script=f"printf '%s\\n' $$ > script.pid\nif [ -e {hold} ]; then sleep 50; fi\n")
    paths = SitePaths(str(world.base), DOMAIN)
    other = ["--config", str(write_config(tmp_path / "other.toml", repo=world.decl, state=tmp_path / "other-state",
                                          server=server, deploy_timeout=60, command_timeout=COMMAND_TIMEOUT))]

    first = start_first(world)
    try:
        pid_file = wait_until(lambda: next(Path(paths.deployments).glob("*/script.pid"), None)
                              if Path(paths.deployments).is_dir() else None, 60, "the first deploy's script")
        script_pid = int(wait_until(lambda: pid_file.read_text().strip(), 10, "the script's pid"))
        dead = pid_file.parent.name
        # The reconciler first (it must not see its script die), then the command on the server.
        first.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(script_pid), signal.SIGKILL)
    finally:
        finish(first)
    wait_until(lambda: not lock._alive(script_pid), 10, "the killed script to be gone")
    hold.unlink()

    rc, out, err = cli_in_process([*other, "reconcile"])
    assert "Progressing" in out and "locked by" in out, out + err

    def takes_over() -> str | None:
        _, out, err = cli_in_process([*other, "reconcile"])
        if "Progressing" in out:
            time.sleep(0.5)
            return None
        return out + err

    out = wait_until(takes_over, 40, "another instance to take the dead owner's lock over")
    assert f"{DOMAIN}: Synced" in out, out
    live = world.active(DOMAIN)
    assert live is not None and live != dead
    assert manifest_status(Path(paths.release(live))) == "success"
    assert dead in releases(paths) and manifest_status(Path(paths.release(dead))) == "updating", \
        "the owner it took the lock from was barely past the bound: its release waits a pass"
    assert not Path(paths.lock).exists()

    rc, out, err = cli_in_process([*other, "reconcile"])
    assert rc == 0 and f"{DOMAIN}: Synced" in out, out + err
    assert releases(paths) == [live], "the dead owner's half-built release was not cleaned by the next pass"


# --- 3. the lock and its heartbeat, through lock.held ------------------------------------------------


ME = lock.Identity("instance-me", "run-me", "me.example.net", 1111)
OTHER = lock.Identity("instance-other", "run-other", "other.example.net", 4242)


@pytest.fixture(name="transport_of", params=["local", pytest.param("ssh", marks=pytest.mark.ssh)])
def transport_fixture(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    if request.param == "local":
        return LocalTransport
    sshd: SshServer = request.getfixturevalue("sshd_session")
    return lambda: SshTransport(sshd.destination, SshOptions(sshd.identity_file, sshd.known_hosts,
                                                             connect_timeout=10.0))


def run(make: Callable[[], Transport], body: Callable[[Transport], Awaitable[T]]) -> T:
    async def go() -> T:
        transport = make()
        try:
            return await body(transport)
        finally:
            await transport.close()

    return asyncio.run(go())


def test_a_held_lock_with_no_command_running_stays_fresh(transport_of: Callable[[], Transport],
                                                         tmp_path: Path) -> None:
    """A holder waiting with no command under the lock (phase 1 of a many-server site while
    another server builds) refreshes it from the task of `lock.held`: past the bound, another
    reconciler is still refused."""
    paths = SitePaths(str(tmp_path / "srv"), DOMAIN)
    stale_after = lock.stale_bound(1.0)

    async def body(transport: Transport) -> str:
        async with lock.held(transport, paths, ME, "build", stale_after=stale_after, timeout=10,
                             heartbeat=lock.heartbeat_interval(1.0)):
            await asyncio.sleep(stale_after + 3)
            with pytest.raises(SiteLocked) as caught:
                async with lock.held(transport, paths, OTHER, "build", stale_after=stale_after, timeout=10):
                    pass
            assert json.loads((Path(paths.lock) / lock.OWNER_FILE).read_text())["run"] == ME.run
            return str(caught.value)

    assert ME.host in run(transport_of, body)
    assert not Path(paths.lock).exists()


def test_a_dead_runs_lock_waits_while_its_command_still_runs_on_the_server(
        transport_of: Callable[[], Transport], tmp_path: Path) -> None:
    """An earlier run of this instance died, but its long step still runs on the server (a local
    command outlives its reconciler) and heartbeats the lock: not taken over, so its release is
    not deleted under it. Once the command ends, the lock is taken over at once (the crash rule),
    as from an owner known gone; also while the ended command is a zombie nobody has reaped yet
    (a killed command's shell, reparented to a PID 1 that reaps late: seen in tests/faults)."""
    paths = SitePaths(str(tmp_path / "srv"), DOMAIN)
    Path(paths.deployments).mkdir(parents=True)
    crashed = lock.Owner(ME.instance, "an-earlier-run", "gone.example.net", 999, "deploy", time.time()).to_json()
    Path(paths.lock).mkdir()
    (Path(paths.lock) / lock.OWNER_FILE).write_text(crashed + "\n")
    step = locking.beating(seam.Command("sleep 4"), locking.Beat(paths.lock, crashed, 1, 60))
    orphan = subprocess.Popen([seam.SH, "-c", step.text])
    try:
        wait_until(lambda: (Path(paths.lock) / locking.BEAT_FILE).exists(), 10, "the step's heartbeat")

        async def refused(transport: Transport) -> str:
            with pytest.raises(SiteLocked) as caught:
                async with lock.held(transport, paths, ME, "deploy", stale_after=30, timeout=10):
                    pass
            return str(caught.value)

        assert "still runs on the server" in run(transport_of, refused)
        assert (Path(paths.lock) / lock.OWNER_FILE).read_text() == crashed + "\n"
        # Ended, and not reaped (this process is its parent and has not waited for it yet).
        wait_until(lambda: _state(orphan.pid) == "Z", 30, "the step to end, a zombie")

        async def taken(transport: Transport) -> Takeover | None:
            lease = lock.Lease()
            async with lock.held(transport, paths, ME, "deploy", stale_after=30, timeout=10, lease=lease):
                return lease.takeover

        takeover = run(transport_of, taken)
    finally:
        orphan.wait(timeout=30)
    assert takeover is not None and takeover.owner_gone and not owner_may_live(takeover)


def _state(pid: int) -> str:
    """A process's state letter (/proc/PID/status), "" when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split()[1] for line in lines if line.startswith("State:")), "")


def test_a_long_step_heartbeats_the_lock_and_stops_with_its_command(tmp_path: Path) -> None:
    """`locking.beating`: the lock dir is touched while the step runs and the lock is ours, the
    step's exit status and output are its own, and nothing is left behind (the loop ends with
    the command: a local command's output would not end while a child held its pipe)."""
    paths = SitePaths(str(tmp_path / "srv"), DOMAIN)
    Path(paths.lock).mkdir(parents=True)
    mine = '{"run":"mine"}'
    (Path(paths.lock) / lock.OWNER_FILE).write_text(mine + "\n")
    beat = locking.Beat(paths.lock, mine, 1, 60)

    def mtime() -> float:
        return Path(paths.lock).stat().st_mtime

    os.utime(paths.lock, (0, 0))
    done = subprocess.run([seam.SH, "-c", locking.beating(seam.Command("sleep 2.5; echo out; exit 7"), beat).text],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (7, "out\n")
    assert mtime() > 0, "the lock was not refreshed while the step ran"
    os.utime(paths.lock, (0, 0))
    time.sleep(2.5)
    assert mtime() == 0, "the heartbeat outlived its command"

    # A lock that is no longer ours is left alone.
    theirs = locking.Beat(paths.lock, '{"run":"theirs"}', 1, 60)
    subprocess.run([seam.SH, "-c", locking.beating(seam.Command("sleep 2.5"), theirs).text], timeout=30, check=True)
    assert mtime() == 0


# --- 4. the planner's rule: a taken-over owner's half-built release waits while it may live ----------


SITE = site_declaration(domain=DOMAIN, server="web-1", base_path="/srv", repository="/srv/app.git")
LIVE, BUILDING = "01082025-090000", "01082025-091000"
HEAD = "a" * 40


def facts() -> SiteFacts:
    site = SiteFacts(DOMAIN, "/srv", link_target=SitePaths("/srv", DOMAIN).link_target(LIVE), path_kind="symlink",
                     provisioned=True, shared=True)
    site.releases = {LIVE: ReleaseFacts(LIVE, Manifest("b" * 40, "main", "/srv/app.git", SITE.build_key, "success")),
                     BUILDING: ReleaseFacts(BUILDING, Manifest(HEAD, "main", "/srv/app.git", SITE.build_key,
                                                               "updating"))}
    return site


@pytest.mark.parametrize(("takeover", "may_live"), [
    (None, False),                                   # the lock was free: its last owner released it
    (Takeover(6.0, 5.0), True),                      # just past the bound: late, maybe not dead
    (Takeover(10.0, 5.0), True),
    (Takeover(10.5, 5.0), False),                    # silent for more than two bounds
    (Takeover(1.0, 5.0, owner_gone=True), False),    # a dead run of ours, nothing of it runs on the server
    (Takeover(61.0, 300.0), True),                   # a lock without an owner file, taken after a minute
])
def test_an_owner_may_live_until_it_was_silent_for_two_bounds(takeover: Takeover | None, may_live: bool) -> None:
    assert owner_may_live(takeover) is may_live
    assert interrupted_releases(facts(), takeover) == (() if may_live else (BUILDING,))


def test_the_plan_under_a_lock_taken_from_a_live_owner_builds_but_never_cleans() -> None:
    now = datetime(2025, 8, 1, 9, 12, 45, tzinfo=UTC)
    kept = plan_site(SITE, facts(), BranchHead(HEAD), FailureMemory(), now, clean_interrupted=True,
                     takeover=Takeover(6.0, 5.0))
    assert not any(isinstance(a, Clean) for a in kept.actions), kept
    assert any(isinstance(a, Deploy) for a in kept.actions) and kept.sync == Sync.OUT_OF_SYNC, kept
    cleaned = plan_site(SITE, facts(), BranchHead(HEAD), FailureMemory(), now, clean_interrupted=True)
    assert Clean((BUILDING,)) in cleaned.actions, cleaned
    # Nobody's lock but ours or none: as before.
    assert plan_site(SITE, facts(), BranchHead(HEAD), FailureMemory(), now).actions == tuple(
        a for a in cleaned.actions if not isinstance(a, Clean))
