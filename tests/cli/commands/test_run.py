"""`reconciler run`: the daemon, started from the command line with the config file AND the
flags: a --state-dir flag is where it records, and stays so when SIGHUP re-reads the config file
(it is handed the flags, not only the file); SIGTERM stops it with exit 0. One real daemon process
on the local transport (this command's only job is to start it)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.support import reconciler_process, wait_until
from tests.support.cli_world import DOMAIN, CliWorld


def _synced(state: Path) -> bool:
    db = state / "reconciler.db"
    if not db.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn, \
            contextlib.suppress(sqlite3.Error):
        row = conn.execute("select sync from sites where domain = ?", (DOMAIN,)).fetchone()
        return row is not None and row[0] == "Synced"
    return False


@pytest.mark.daemon
def test_the_daemon_keeps_the_flags_across_a_reload_and_stops_on_sigterm(world: CliWorld) -> None:
    world.declare(script="echo built\n")
    on_flag = world.tmp / "state-on-flag"
    world.write_config(interval=1)  # the config file names world.state; the flag beats it
    log = world.tmp / "daemon.stderr"
    with open(log, "wb") as err:
        daemon = reconciler_process("--config", str(world.config), "--state-dir", str(on_flag), "run",
                                    cwd=world.tmp, text=False, stdout=err, stderr=err, start_new_session=True)
    try:
        wait_until(lambda: _synced(on_flag), 60, "the daemon deployed the site", lambda: log.read_text())
        assert not world.state.exists(), "the --state-dir flag, not the file's state_dir"
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in log.read_text(), 30, "the reload", lambda: log.read_text())
        assert "need a restart" not in log.read_text(), "the reload lost the --state-dir flag"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
    views = json.loads(world.run("--config", str(world.config), "--state-dir", str(on_flag), "status", "--json").out)
    assert [(v["domain"], v["sync"]) for v in views] == [(DOMAIN, "Synced")]
