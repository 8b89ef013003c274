"""The state database: SQLite through sqlite-utils, one connection owned by one thread.

It holds the BrokeForge records (sites, deployments) plus what `status` shows: the site
tables here, the deployment rows in `engine/deployment_rows.py` (a gateway Store extends), the
schema in `engine/schema.py`. Rows cross this boundary as typed records (`engine/rows.py`). The
servers are the truth: `engine/adoption.py` rebuilds deployment rows from release manifests, so
a deleted database costs nothing but history that was already pruned.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlite_utils

from reconciler.core.reasons import SwitchReason
from reconciler.engine.deployment_rows import DeploymentRows
from reconciler.engine.deployment_rows import utcnow as utcnow  # where the engine has always found it
from reconciler.engine.rows import ActivationRow, DeploymentRow, RequestRow, SiteRow, SiteServerRow
from reconciler.engine.schema import migrations

OBSERVED_EVERY = 10.0  # seconds: a server's observed_at is refreshed at most this often (few writes)
# How a site on many servers says, per server, that its probe failed (engine/twophase's board).
UNREACHABLE = "unreachable: "


SNAPSHOT_CHUNK = 500  # domains per statement of a snapshot


@dataclass(frozen=True)
class Snapshot:
    """Rows of a round's sites, read at once (Store.snapshot)."""

    sites: dict[str, SiteRow]
    requests: dict[str, RequestRow]
    deployments: dict[str, list[DeploymentRow]]


@contextmanager
def _opening(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `<db>.lock` (owner-only, beside the database) while a
    connection sets the journal mode and migrates the schema."""
    fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class Store(DeploymentRows):
    """The SQLite state database: sites, deployments and a small key/value table. One
    connection, owned by the thread that made it. The servers are the truth: `adopt` rebuilds
    what a pass needs from their facts when the database is new or behind."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The database holds deploy logs and scripts: owner-only from the first byte.
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.path = path
        self._many: set[str] | None = None  # sites with per-server rows (site_servers), once read
        # No sqlite-utils plugins: whatever happens to be installed beside us never runs on the
        # state database (and finding them scans every installed package's entry points).
        self.db = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None), execute_plugins=False)
        # First, so every later statement waits for another process's writer.
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("PRAGMA foreign_keys=ON")
        # Opening is serialised across processes: SQLite answers "database is locked" at once,
        # without the busy handler, when two connections switch a new file to WAL or create the
        # schema together (a `status` started while the daemon creates the database).
        with _opening(path):
            self.db.execute("PRAGMA journal_mode=WAL")
            migrations.apply(self.db)

    @classmethod
    def scratch(cls) -> Store:
        """An empty in-memory database with the schema, for commands that only look when there is
        no state database yet: looking never creates one (an operator running the CLI in the
        wrong directory must not get a stray ./state/)."""
        store = cls.__new__(cls)
        store.path = Path(":memory:")
        store._many = None
        store.db = sqlite_utils.Database(memory=True, execute_plugins=False)
        store.db.execute("PRAGMA foreign_keys=ON")
        migrations.apply(store.db)
        return store

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> str | None:
        rows = list(self.db["meta"].rows_where("key = ?", [key]))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        if self.meta(key) != value:
            self.db["meta"].upsert({"key": key, "value": value}, pk="key")  # type: ignore[union-attr]

    # -- sites -------------------------------------------------------------------------------

    def site(self, domain: str) -> SiteRow | None:
        rows = list(self.db["sites"].rows_where("domain = ?", [domain]))
        return cast(SiteRow, rows[0]) if rows else None

    def sites(self) -> dict[str, SiteRow]:
        return {row["domain"]: cast(SiteRow, row) for row in self.db["sites"].rows}

    def update_site(self, domain: str, current: SiteRow | None = None, /, **values: Any) -> None:
        """Upsert; writes only when something changed, so no-op passes do not write. `current`:
        the row as the caller already read it (a round's snapshot), else it is read now."""
        current = current if current is not None else self.site(domain)
        if current is not None and all(current.get(k) == v for k, v in values.items()):
            return
        self.db["sites"].upsert({"domain": domain, **values, "updated_at": utcnow()}, pk="domain")  # type: ignore[union-attr]

    def settle_progressing(self, message: str) -> list[str]:
        """Sites left `Progressing` when the daemon stops become OutOfSync with `message`: nobody
        is changing them any more, and status must not say otherwise until the next start."""
        domains = [r["domain"] for r in self.db["sites"].rows_where("sync = 'Progressing'", select="domain")]
        for domain in domains:
            self.update_site(domain, sync="OutOfSync", message=message)
        return domains

    def record_activation(self, domain: str, release: str, previous: str | None, at: str, trigger: SwitchReason,
                          requested_by: str) -> None:
        """A switch without a build, for history: one row per switch of the site, however many
        servers it switched (engine/switching.py)."""
        self.db["activations"].insert({"site": domain, "release": release, "previous": previous, "at": at,  # type: ignore[union-attr]
                                       "trigger": str(trigger), "requested_by": requested_by})

    def activations(self, domain: str) -> list[ActivationRow]:
        """Newest first."""
        return cast(list[ActivationRow], list(self.db["activations"].rows_where("site = ?", [domain],
                                                                                 order_by="at desc, id desc")))

    def expired(self, before: str) -> tuple[list[DeploymentRow], list[int]]:
        """History older than `before` (a utcnow() string) that retention may forget: deployment
        rows finished before it whose release is gone from its server (`deployment_path` null),
        and activations before it. Never a row still unfinished, of a release live anywhere, the
        latest of its site on each server (what the site last set out to do, and the failure it
        remembers), nor the latest activation of a site."""
        rows = self.db.query(
            "select * from (select *, row_number() over (partition by site, coalesce(server, '') "
            "order by started_at desc, id desc) as newest from deployments) as d "
            "where newest > 1 and deployment_path is null and status not in ('pending', 'updating') "
            "and coalesce(completed_at, started_at, '') < ? "
            "and id not in (select active_deployment_id from sites where active_deployment_id is not null) "
            "and not exists (select 1 from sites s where s.domain = d.site and s.active_release = d.release) "
            "and not exists (select 1 from site_servers v where v.site = d.site and v.active_release = d.release)",
            [before])
        deployments = [cast(DeploymentRow, {k: v for k, v in row.items() if k != "newest"}) for row in rows]
        activations = [row["id"] for row in self.db.query(
            "select id from (select id, at, row_number() over (partition by site order by at desc, id desc) "
            "as newest from activations) where newest > 1 and at < ?", [before])]
        return deployments, activations

    def forget_history(self, deployments: list[int], activations: list[int]) -> None:
        """Delete these deployment and activation rows (`expired` chose them), in one transaction."""
        with self.db.atomic():
            for table, ids in (("deployments", deployments), ("activations", activations)):
                for start in range(0, len(ids), SNAPSHOT_CHUNK):
                    chunk = ids[start:start + SNAPSHOT_CHUNK]
                    self.db.execute(f"delete from {table} where id in ({','.join('?' * len(chunk))})", chunk)

    def set_site_servers(self, domain: str, rows: dict[str, tuple[str | None, str]]) -> None:
        """Each server's (live release, message) of a site on many servers; other rows go.

        Every server here but one whose message says it was unreachable answered its probe this
        pass: noted as observed (`status`'s "observed"), at most every OBSERVED_EVERY seconds, as a
        one-server round notes its server. The many-server executor reports its probes only here."""
        for server, (_, message) in rows.items():
            if not message.startswith(UNREACHABLE):
                self.observed(server)
        current = {r["server"]: (r["active_release"], r["message"] or "") for r in self.site_servers(domain)}
        if current == rows:
            return
        self._with_servers().add(domain)
        with self.db.atomic():
            self.db.execute("delete from site_servers where site = ?", [domain])
            for server, (active, message) in rows.items():
                self.db["site_servers"].insert({"site": domain, "server": server,  # type: ignore[union-attr]
                                                "active_release": active, "message": message})

    def site_servers(self, domain: str) -> list[SiteServerRow]:
        if domain not in self._with_servers():
            return []  # most sites: no query (a no-op pass asks for every site)
        return cast(list[SiteServerRow], list(self.db["site_servers"].rows_where("site = ?", [domain],
                                                                                 order_by="rowid")))

    def _with_servers(self) -> set[str]:
        """The sites that have per-server rows, read once per Store and kept in step by the writers."""
        if self._many is None:
            self._many = {row["site"] for row in self.db.query("select distinct site from site_servers")}
        return self._many

    def forget_site_servers(self, domain: str, servers: list[str]) -> None:
        for server in servers:
            self.db.execute("delete from site_servers where site = ? and server = ?", [domain, server])
        self._many = None  # read again when next asked

    # -- servers -----------------------------------------------------------------------------

    def observed(self, server: str, now: datetime | None = None) -> None:
        """Note a successful probe of `server` (written at most every OBSERVED_EVERY seconds)."""
        moment = now or datetime.now(UTC)
        rows = list(self.db["servers"].rows_where("name = ?", [server]))
        if rows:
            last = datetime.strptime(rows[0]["observed_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            if (moment - last).total_seconds() < OBSERVED_EVERY:
                return
        # Plain SQL: sqlite-utils' first upsert on a connection creates and drops a throwaway
        # table to learn whether SQLite has ON CONFLICT, a write into the state database on
        # every CLI run and daemon start (no-op passes write nothing else).
        self.db.execute("insert into servers (name, observed_at) values (?, ?) "
                        "on conflict (name) do update set observed_at = excluded.observed_at",
                        [server, moment.strftime("%Y-%m-%dT%H:%M:%SZ")])

    def observations(self) -> dict[str, str]:
        return {row["name"]: row["observed_at"] for row in self.db["servers"].rows}

    def reload_owed(self, domain: str) -> tuple[str, str] | None:
        row = self.site(domain)
        release = row["reload_owed"] if row is not None else None
        return (release, row["reload_owed_reason"] or "reload failed") if row is not None and release else None

    def owe_reload(self, domain: str, release: str | None, reason: str = "") -> None:
        """Remember that `release`'s reload failed (None: the live release's reload is settled)."""
        self.update_site(domain, reload_owed=release, reload_owed_reason=reason if release else None)

    def snapshot(self, domains: list[str]) -> Snapshot:
        """What a round needs of `domains`, read in three statements instead of a dozen per site:
        their rows in sites, requests and deployments. A round of sites with nothing to do works
        from it; anything that changes a site reads afresh under the site's lock."""
        wanted = sorted(set(domains))
        sites: dict[str, SiteRow] = {}
        requests: dict[str, RequestRow] = {}
        deployments: dict[str, list[DeploymentRow]] = {d: [] for d in wanted}
        # Only this round's rows (a server's share of the fleet, not every site's), in
        # chunks that stay far below SQLite's limit on bound parameters.
        for start in range(0, len(wanted), SNAPSHOT_CHUNK):
            chunk = wanted[start:start + SNAPSHOT_CHUNK]
            marks = ",".join("?" * len(chunk))
            for site in self.db.query(f"select * from sites where domain in ({marks})", chunk):
                sites[site["domain"]] = cast(SiteRow, site)
            for request in self.db.query(f"select * from requests where site in ({marks})", chunk):
                requests[request["site"]] = cast(RequestRow, request)
            for row in self.db.query(f"select * from deployments where site in ({marks})", chunk):
                deployments[row["site"]].append(cast(DeploymentRow, row))
        return Snapshot(sites, requests, deployments)
