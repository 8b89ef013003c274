"""Opening the state database from several processes at once: the CI run of 28bb62c failed when
`status --json` opened the database while a just-started daemon was creating it (SQLite answers
"database is locked" at once, without its busy handler, when two connections switch a new file to
WAL and create the schema together). Real processes, a real SQLite file."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils
import sqlite_utils.plugins

from reconciler.engine.store import Store

OPEN = """
import sys
from pathlib import Path

from reconciler.engine.store import Store

store = Store(Path(sys.argv[1]))
store.update_site(sys.argv[2], sync="Synced")
store.close()
"""


def test_processes_opening_a_new_database_together_all_succeed(tmp_path: Path) -> None:
    for attempt in range(4):
        path = tmp_path / f"state-{attempt}" / "state.db"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(path), f"s{n}.example.com"],
                                  stderr=subprocess.PIPE, text=True) for n in range(4)]
        errors = [proc.communicate(timeout=60)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 4, errors
    store = Store(path)
    try:
        assert set(store.sites()) == {f"s{n}.example.com" for n in range(4)}
    finally:
        store.close()
    # The lock file beside the database is owner-only, like the database.
    assert stat.S_IMODE((path.parent / "state.db.lock").stat().st_mode) == 0o600


class _Planted:
    """A sqlite-utils plugin, as a package installed beside the reconciler could register one."""

    @sqlite_utils.hookimpl
    def prepare_connection(self, conn: sqlite3.Connection) -> None:
        conn.create_function("planted", 0, lambda: "ran")


def test_no_sqlite_utils_plugin_runs_on_the_state_database(tmp_path: Path) -> None:
    """Whatever sqlite-utils plugin is installed never touches the state database's connection."""
    plugin = _Planted()
    sqlite_utils.plugins.pm.register(plugin)
    try:
        store = Store(tmp_path / "state" / "reconciler.db")
        scratch = Store.scratch()
        for db in (store.db, scratch.db):
            with pytest.raises(sqlite3.OperationalError, match="no such function"):
                db.execute("select planted()")
        store.close()
    finally:
        sqlite_utils.plugins.pm.unregister(plugin)
