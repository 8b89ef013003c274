"""Watching a `reconciler run` process from outside, for the benchmarks that drive the real
daemon (memory, masschange): how many sites its database says are Synced, and when it is idle."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def synced(db: Path) -> int:
    """Sites the daemon's database records as Synced (0 before the database exists)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("select count(*) from sites where sync = 'Synced'").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15])  # utime stime cutime cstime


def children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def wait_quiet(pid: int, deadline: float, quiet: float = 0.5) -> bool:
    """Until the process has no child and has used no CPU for `quiet` seconds (a no-op pass
    writes nothing that could be watched instead). False when the deadline came first."""
    ticks = cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_ticks(pid)
        if now == ticks and not children(pid):
            return True
        ticks = now
    return False


def stop(daemon: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM, as systemd stops it; killed if it has not stopped within `timeout`."""
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
