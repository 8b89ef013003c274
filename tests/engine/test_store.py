"""The state database's deployment rows: one row per (site, server, release) name, always. A
release built again under a name an earlier attempt had (a site on many servers keeps one name
everywhere; a run stopped before its directory was made leaves only its row; a pass in the same
second as a half-built release) keeps that attempt in history as `<release>#<n>`. Before, the
second insert failed with `UNIQUE constraint failed` on every later pass (issue 21 behaviour
suite: SIGTERM mid-build on two servers).

Opening the state database from several processes at once: the CI run of 28bb62c failed when
`status --json` opened the database while a just-started daemon was creating it (SQLite answers
"database is locked" at once, without its busy handler, when two connections switch a new file to
WAL and create the schema together). Real processes, a real SQLite file."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from reconciler.core.status import DeployStatus
from reconciler.engine.store import Store

OPEN = """
store = Store(Path(sys.argv[1]))
store.update_site(sys.argv[2], sync="Synced")
store.close()
"""


def _start(store: Store, status: str, server: str = "web-1") -> int:
    return store.start_deployment(site="a.example.com", server=server, release="06122026-120000", status=status,
                                  commit_sha="a" * 40, started_at="2026-12-06T12:00:00Z")


def test_a_release_started_again_under_its_name_retires_the_earlier_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        first = _start(store, DeployStatus.PENDING)
        other_server = _start(store, DeployStatus.SUCCESS, server="web-2")
        second = _start(store, DeployStatus.PENDING)
        third = _start(store, DeployStatus.PENDING)
        names = {row["id"]: row["release"] for row in store.deployments("a.example.com")}
        assert names[third] == "06122026-120000"
        assert {names[first], names[second]} == {"06122026-120000#1", "06122026-120000#2"}
        assert names[other_server] == "06122026-120000", "another server's row of that name is its own"
    finally:
        store.close()


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
