"""The state database read with plain sqlite3, for commands that only look (`status`, `history`,
`logs`): the same rows `engine.store.Store` returns, without importing sqlite-utils (about half
of a look-only command's start-up) and without ever writing.

It never creates, migrates or changes the database. A database whose schema predates what is
read here raises `StaleSchema`; the caller then opens a `Store`, which migrates it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from reconciler.engine.rows import ActivationRow, DeploymentRow, SiteRow, SiteServerRow

# The migrations (engine.store) whose tables and columns the views read. A database missing one
# is read through Store instead (which applies it). Newer migrations do not matter here.
READS_MIGRATIONS = ("m001_initial", "m002_meta", "m003_requests", "m004_commit_info", "m005_reload_owed",
                    "m006_servers", "m007_activations", "m008_request_after", "m009_deployment_server",
                    "m010_site_servers")


class StaleSchema(Exception):
    """The database is missing a migration the readers rely on (an older reconciler wrote it)."""


# Why the last fetch of the declarations' Git host failed ("" since one succeeded): written by
# engine/desired.py in whichever process fetched, read by `status --exit-code` (an alarm).
FETCH_PROBLEM = "declarations_fetch_problem"


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class StateReader:
    """Read-only queries of the state database, shaped as Store's (engine.views.StateReads)."""

    def __init__(self, path: Path) -> None:
        # mode=rw, not ro: a WAL database is readable without its -shm only when we may create it,
        # and rw still refuses to create a missing database. Nothing here writes.
        uri = str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        self.db = sqlite3.connect(f"file:{uri}?mode=rw", uri=True, isolation_level=None)
        self.db.row_factory = _dict_row
        try:
            self.db.execute("PRAGMA busy_timeout=5000")
            applied = {row["name"] for row in self.db.execute(
                "select name from _sqlite_migrations where migration_set = 'reconciler'")}
        except sqlite3.Error as exc:
            self.db.close()
            raise StaleSchema(str(exc)) from exc
        if missing := [name for name in READS_MIGRATIONS if name not in applied]:
            self.db.close()
            raise StaleSchema(f"not yet migrated: {', '.join(missing)}")

    def close(self) -> None:
        self.db.close()

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return list(self.db.execute(sql, args))

    def meta(self, key: str) -> str | None:
        rows = self._all("select value from meta where key = ?", key)
        return str(rows[0]["value"]) if rows else None

    def site(self, domain: str) -> SiteRow | None:
        rows = self._all("select * from sites where domain = ?", domain)
        return cast("SiteRow", rows[0]) if rows else None

    def sites(self) -> dict[str, SiteRow]:
        return {row["domain"]: cast("SiteRow", row) for row in self._all("select * from sites")}

    def observations(self) -> dict[str, str]:
        return {row["name"]: row["observed_at"] for row in self._all("select * from servers")}

    def site_servers(self, domain: str) -> list[SiteServerRow]:
        return cast("list[SiteServerRow]", self._all(
            "select * from site_servers where site = ? order by rowid", domain))

    def activations(self, domain: str) -> list[ActivationRow]:
        """Newest first."""
        return cast("list[ActivationRow]", self._all(
            "select * from activations where site = ? order by at desc, id desc", domain))

    def deployments(self, domain: str) -> list[DeploymentRow]:
        """Newest first, as Store.deployments (release names do not sort as text)."""
        return cast("list[DeploymentRow]", self._all(
            "select * from deployments where site = ? order by started_at desc, id desc", domain))

    def deployment(self, deployment_id: int) -> DeploymentRow | None:
        rows = self._all("select * from deployments where id = ?", deployment_id)
        return cast("DeploymentRow", rows[0]) if rows else None

    def latest_deployment(self, domain: str) -> DeploymentRow | None:
        """The site's newest deployment row (any server), as Store.latest_deployment."""
        rows = self._all("select * from deployments where site = ? order by started_at desc, id desc limit 1", domain)
        return cast("DeploymentRow", rows[0]) if rows else None

    def release_rows(self, domain: str, release: str) -> list[DeploymentRow]:
        """Every server's row of `release`, as Store.release_rows."""
        return cast("list[DeploymentRow]", self._all(
            "select * from deployments where site = ? and release = ? order by id", domain, release))
