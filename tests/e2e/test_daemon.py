"""End-to-end tests of `reconciler run`, the daemon, as a REAL separate process.

The daemon is started with `python -m reconciler --config reconciler.toml run` against real
git repositories and a real OpenSSH sshd on 127.0.0.1 (tests/support/sshd.py). The tests act like an
operator (commits, hand edits on the server, signals, a dying SSH server, systemd's notify
socket) and observe like one (the site symlink, release dirs, `status --json`, `history --json`,
the state database). Every wait is bounded polling; nothing asserts on wall-clock durations.

The last tests are unit tests of the systemd glue: reconciler.service.journal and reconciler.service.systemd.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.service.daemon import SHUTDOWN_GRACE
from tests import support
from tests.support import Daemons, Launcher, LinkSampler, SiteOnDisk, app_commit
from tests.support.sshd import SshServer

DOMAIN = "shop.example.com"
DEPLOY_TIMEOUT = 60.0  # bound for one deploy over SSH to show up (first connect, clone, script)
TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\d|\d\d:\d\d:\d\d")


# --- the world of one test -----------------------------------------------------------------------


@dataclass
class World(support.World):
    """Sites on the sshd by default (`ssh_world`) or "local" (`local_world`); the daemon and the
    CLI run as real processes on this world's config."""

    pid_files: list[Path] = field(default_factory=list)  # of hanging scripts, killed at teardown

    @property
    def run(self) -> Launcher:
        return self.launcher

    def site(self, domain: str = DOMAIN, base: Path | None = None) -> SiteOnDisk:
        return self.on_disk(domain, base)

    def slow_script(self, name: str, *, second_run_exits: bool = False) -> tuple[str, Path]:
        """A deploy script that signals it started (a marker file) and then hangs.

        Its pid is recorded so teardown can reap it: a remote command orphaned by a dead
        client is reparented to init, out of reach of the sshd fixture."""
        marker = self.tmp / f"{name}.started"
        pid_file = self.tmp / f"{name}.pid"
        self.pid_files.append(pid_file)
        lines = []
        if second_run_exits:
            lines.append(f"if [ -f {marker} ]; then echo second-run; exit 0; fi")
        lines += [f"echo $$ > {pid_file}", f"touch {marker}", "exec sleep 300"]
        return "\n".join(lines) + "\n", marker

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = DEPLOY_TIMEOUT) -> Any:
        return super().wait(predicate, what, timeout)

    def wait_live(self, site: SiteOnDisk, commit: str, exclude: tuple[str, ...] = (),
                  timeout: float = DEPLOY_TIMEOUT) -> str:
        """Wait until the site serves a complete release of `commit` (not one of `exclude`)."""

        def live() -> str | None:
            release = site.active()
            if release is None or release in exclude or site.live_commit() != commit:
                return None
            return release

        release: str = self.wait(live, f"{site.domain} live at {commit[:12]}", timeout)
        return release

    def wait_status(self, domain: str, timeout: float = DEPLOY_TIMEOUT, **expected: Any) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            view = self.run.status().get(domain)
            if view is None or any(view.get(k) != v for k, v in expected.items()):
                return None
            return view

        view: dict[str, Any] = self.wait(matches, f"status of {domain} to be {expected}", timeout)
        return view

    def daemon_serving_first_release(self) -> tuple[SiteOnDisk, str, Any, str]:
        """(site, commit, daemon, release): the daemon started on the default site with a script
        that succeeds, once that first release is live and status says Synced."""
        site, commit = self.site(), self.head()
        self.declare(script="echo ok\n")
        daemon = self.run.start()
        good = self.wait_live(site, commit)
        self.wait_status(DOMAIN, sync="Synced", active_release=good)
        return site, commit, daemon, good

    def deployment_row(self, domain: str, release: str) -> dict[str, Any]:
        """The deployment's row straight from the state database (history --json has no message)."""
        with contextlib.closing(sqlite3.connect(self.state / "reconciler.db", timeout=10)) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM deployments WHERE site = ? AND release = ?", (domain, release)).fetchone()
        assert row is not None, f"no deployment recorded for {domain} {release}"
        return dict(row)

    def reap(self) -> None:
        for pid_file in self.pid_files:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def _make_world(tmp_path: Path, server: SshServer | None, daemons: Daemons, request: pytest.FixtureRequest) -> World:
    world = World.create(tmp_path, server, daemons=daemons, interval=2)
    request.addfinalizer(world.reap)
    request.addfinalizer(daemons.close)  # runs first: daemons die before their scripts are reaped
    return world


@pytest.fixture(name="ssh_world")
def ssh_world_fixture(tmp_path: Path, sshd_session: SshServer, daemons: Daemons, request: pytest.FixtureRequest,
                      ) -> World:
    return _make_world(tmp_path, sshd_session, daemons, request)


@pytest.fixture(name="local_world")
def local_world_fixture(tmp_path: Path, daemons: Daemons, request: pytest.FixtureRequest) -> World:
    return _make_world(tmp_path, None, daemons, request)


# --- 1. the daemon converges over SSH, continuously, without a restart ----------------------------


def test_daemon_deploys_rolls_back_forward_polls_and_corrects_drift_over_ssh(ssh_world: World) -> None:
    w = ssh_world
    site = w.site()
    daemon = w.run.start()

    # A committed declaration: the site appears at the branch head.
    c1 = w.head()
    w.declare(script="echo ok\n")
    first = w.wait_live(site, c1)
    assert w.site().manifest(first)["commit"] == c1
    status = w.wait_status(DOMAIN, sync="Synced", active_release=first)
    assert (status["health"], status["active_commit"], status["desired_commit"]) == ("Healthy", c1, c1), status

    with LinkSampler(site.link) as sampler:
        # A second app commit deploys a second release.
        c2 = app_commit(w.app, "v2")
        second = w.wait_live(site, c2, exclude=(first,))
        assert site.releases() == [first, second]
        assert (site.link / "public" / "index.php").read_text() == "<?php echo 'v2';\n"

        # A committed pin rolls back: the symlink only, no new release.
        w.declare(script="echo ok\n", pin=first)
        w.wait(lambda: site.active() == first, f"rollback to {first}")
        status = w.wait_status(DOMAIN, sync="Synced", pinned=first, active_release=first)
        assert status["active_commit"] == c1, status
        assert site.releases() == [first, second], "a rollback must not build a release"

        # Unpin: forward again to the existing release of the branch head.
        w.declare(script="echo ok\n")
        w.wait(lambda: site.active() == second, f"roll-forward to {second}")
        w.wait_status(DOMAIN, sync="Synced", pinned=None, active_release=second, active_commit=c2)
        assert site.releases() == [first, second], "a roll-forward must not build a release"

        # A push to the app branch (no declaration change) is picked up by polling.
        c3 = app_commit(w.app, "v3")
        third = w.wait_live(site, c3, exclude=(first, second))
        assert site.releases() == [first, second, third]

        # Drift: someone points the site at another release by hand (atomically, so the
        # sampler stays happy); the next poll tick puts it back.
        w.wait_status(DOMAIN, sync="Synced", active_release=third)
        temp = w.base / f".{DOMAIN}.by-hand"
        os.symlink(f"deployments/{DOMAIN}/{second}", temp)
        os.replace(temp, site.link)
        assert site.active() == second
        w.wait(lambda: site.active() == third, "drift corrected back to the desired release")
        assert site.releases() == [first, second, third], "correcting drift must not build a release"

    assert sampler.samples > 0 and not sampler.failures, sampler.failures[:5]
    status = w.wait_status(DOMAIN, sync="Synced", active_release=third)
    assert w.server is not None
    assert status == {
        "domain": DOMAIN, "server": w.server.destination, "sync": "Synced", "health": "Healthy",
        "pinned": None, "active_release": third, "active_commit": c3, "desired_commit": c3,
        "last_deployed_at": status["last_deployed_at"], "message": "",
        "observed_at": status["observed_at"],  # beyond SPEC's keys: when the server was last probed
        "servers": [{"server": w.server.destination, "active_release": third, "message": ""}],
        "ref": "branch main",  # and what the site deploys from
        "shard": "1/1", "skipped": False,  # and that this (unsharded) instance owns it
    }
    assert status["observed_at"], status
    history = w.run.history(DOMAIN)
    assert [h["release"] for h in history] == [third, second, first]
    assert [h["status"] for h in history] == ["success"] * 3
    assert [h["is_active"] for h in history] == [True, False, False]
    assert daemon.alive(), daemon.tail()


# --- 2. kill -9 in the middle of a deploy script -----------------------------------------------------


def test_kill_9_during_deploy_script_keeps_old_release_and_recovers(ssh_world: World) -> None:
    w = ssh_world
    site, commit, daemon, good = w.daemon_serving_first_release()

    slow, marker = w.slow_script("kill9", second_run_exits=True)
    with LinkSampler(site.link) as sampler:
        # Same commit, new script: a new build whose script hangs until we pull the plug.
        w.declare(script=slow)
        w.wait(marker.exists, "the slow deploy script to start")
        (half,) = [r for r in site.releases() if r != good]
        assert site.manifest(half)["status"] == "updating"
        daemon.proc.kill()  # SIGKILL: no handler, no cleanup
        daemon.proc.wait(timeout=10)
        assert site.active() == good, "a release whose script never finished went live"

        # Start again. The second run of the script exits at once: the site converges.
        restarted = w.run.start()
        new = w.wait_live(site, commit, exclude=(good, half))
        w.wait_status(DOMAIN, sync="Synced", active_release=new)
        w.wait(lambda: half not in site.releases(), f"half-built release {half} removed")

    assert sampler.samples > 0 and not sampler.failures, sampler.failures[:5]
    assert site.active() == new
    assert "second-run" in (site.deployments / new / "deployment.log").read_text()
    assert site.releases() == [good, new]

    row = w.deployment_row(DOMAIN, half)
    assert row["status"] == "failed", row
    assert "interrupted" in (row["message"] or ""), row
    assert row["deployment_path"] is None, row
    history = {h["release"]: h for h in w.run.history(DOMAIN)}
    assert history[half]["status"] == "failed" and not history[half]["can_rollback"], history[half]
    assert history[new]["status"] == "success" and history[new]["is_active"], history[new]
    assert restarted.alive(), restarted.tail()


# --- 3. the SSH server goes away and comes back -----------------------------------------------------


def test_ssh_server_down_other_sites_continue_and_it_converges_when_back(
    tmp_path: Path, sshd: SshServer, daemons: Daemons, request: pytest.FixtureRequest
) -> None:
    w = _make_world(tmp_path, sshd, daemons, request)
    local_base, remote_base = tmp_path / "local-srv", tmp_path / "remote-srv"
    local_base.mkdir()
    remote_base.mkdir()
    local, remote = w.site("local.example.com", local_base), w.site("remote.example.com", remote_base)
    w.declare(local.domain, server="local", base=local_base, script="echo ok\n")
    w.declare(remote.domain, base=remote_base, script="echo ok\n")
    c1 = w.head()
    daemon = w.run.start()
    local_first = w.wait_live(local, c1)
    remote_first = w.wait_live(remote, c1)
    w.wait_status(local.domain, sync="Synced")
    w.wait_status(remote.domain, sync="Synced")

    sshd.stop()
    c2 = app_commit(w.app, "v2")
    # The local site keeps converging while the SSH server is down.
    w.wait_live(local, c2, exclude=(local_first,))
    w.wait_status(local.domain, sync="Synced", active_commit=c2)

    def unreachable() -> dict[str, Any] | None:
        view = w.run.status()[remote.domain]
        message = view["message"] or ""
        ok = view["sync"] == "Unknown" and sshd.destination in message and "retrying" in message
        return view if ok else None

    w.wait(unreachable, "the SSH site to report Unknown, naming the server, retrying")
    assert remote.active() == remote_first
    assert remote.releases() == [remote_first]

    sshd.start()
    # No daemon restart: the backoff retries until the server is back (5 s, doubling).
    w.wait_live(remote, c2, exclude=(remote_first,), timeout=90)
    view = w.wait_status(remote.domain, sync="Synced", active_commit=c2)
    assert view["message"] == "", view
    assert daemon.alive(), daemon.tail()
    assert len(w.run.started) == 1


# --- 4. systemd's notify protocol, end to end ----------------------------------------------------------


class NotifyListener:
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode())

    def fields(self) -> list[str]:
        with self._lock:
            return [line for message in self.messages for line in message.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def test_daemon_speaks_sd_notify(local_world: World, short_dir: Path) -> None:
    w = local_world
    w.declare(server="local", script="echo ok\n")
    path = str(short_dir / "notify.sock")
    listener = NotifyListener(path)
    try:
        daemon = w.run.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        w.wait(lambda: "READY=1" in listener.fields(), "READY=1")
        w.wait(lambda: any(f.startswith("STATUS=") and len(f) > len("STATUS=") for f in listener.fields()),
               "a STATUS= line")
        # WATCHDOG_USEC = 1 s: the daemon must ping at least every half second.
        w.wait(lambda: listener.fields().count("WATCHDOG=1") >= 2, "WATCHDOG=1 twice")
        w.wait_live(w.site(), w.head())
        assert "STOPPING=1" not in listener.fields()

        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=SHUTDOWN_GRACE + 15) == 0, daemon.tail()
        w.wait(lambda: "STOPPING=1" in listener.fields(), "STOPPING=1", timeout=10)
        fields = listener.fields()
        assert fields.index("READY=1") < fields.index("STOPPING=1"), fields
        assert fields.count("READY=1") == 1, fields
    finally:
        listener.close()


# --- 5. SIGTERM during a slow deploy script ------------------------------------------------------------


def test_sigterm_during_deploy_script_exits_cleanly_and_never_switches(ssh_world: World) -> None:
    w = ssh_world
    site, _, daemon, good = w.daemon_serving_first_release()

    # The script hangs far longer than the shutdown grace period: waiting for it is wrong.
    slow, marker = w.slow_script("sigterm")
    with LinkSampler(site.link) as sampler:
        w.declare(script=slow)
        w.wait(marker.exists, "the slow deploy script to start")
        (half,) = [r for r in site.releases() if r != good]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=SHUTDOWN_GRACE + 10) == 0, daemon.tail()

    assert sampler.samples > 0 and not sampler.failures, sampler.failures[:5]
    assert site.active() == good, "the half-built release went live"
    assert site.releases() == [good], f"half-built release {half} left behind"
    row = w.deployment_row(DOMAIN, half)
    assert row["status"] == "failed", row
    assert row["deployment_path"] is None, row
    history = {h["release"]: h for h in w.run.history(DOMAIN)}
    assert history[good]["is_active"] and history[good]["status"] == "success", history
    # The shutdown settled the site's row (not "Progressing ... deploying" until
    # the next start) and kept the partial output of the aborted build.
    view = w.run.status()[DOMAIN]
    assert view["sync"] == "OutOfSync" and "aborted during deploy script" in view["message"], view
    assert view["active_release"] == good, view
    logs = w.run.cli("logs", DOMAIN, str(history[half]["id"]))
    assert logs.returncode == 0, logs
    assert f"touch {marker}" in logs.stdout and "aborted during deploy script" in logs.stdout, logs.stdout


# --- 6. journal-aware logging ---------------------------------------------------------------------------


def test_daemon_stderr_under_the_journal_has_priority_prefixes(local_world: World) -> None:
    w = local_world
    w.declare(server="local", script="echo ok\n")
    log = w.tmp / "journal.stderr"
    log.touch()
    st = log.stat()
    daemon = w.run.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, log=log)
    w.wait_live(w.site(), w.head())
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=SHUTDOWN_GRACE + 15) == 0, daemon.tail()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "the daemon logged nothing"
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert not any(TIMESTAMP_RE.search(line) for line in lines), lines
