"""The deployment rows of the state database: one row per (site, server, release), what started
it and how it ended, and the one pending imperative request per site (`retry`, `redeploy`).
A table gateway `engine.store.Store` extends; it works on the Store's connection."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import sqlite_utils

from reconciler.core.reasons import RequestKind
from reconciler.core.status import UNFINISHED, DeployStatus
from reconciler.engine.rows import DeploymentRow, RequestRow


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeploymentRows:
    db: sqlite_utils.Database

    def start_deployment(self, **values: Any) -> int:
        # A release built again under a name an earlier attempt had (a site on many servers keeps
        # one name everywhere; a run stopped before its directory was made leaves only its row):
        # that attempt stays in history as `<release>#<n>`, never a second row of one name.
        self.retire(values["site"], values["release"], values["server"])
        table = self.db["deployments"]
        table.insert(values)  # type: ignore[union-attr]
        last = table.last_pk  # type: ignore[union-attr]
        assert last is not None
        return int(last)

    def update_deployment(self, deployment_id: int, **values: Any) -> None:
        self.db["deployments"].update(deployment_id, values)  # type: ignore[union-attr]

    @staticmethod
    def scope(domain: str, server: str | None, more: str = "") -> tuple[str, list[Any]]:
        """A site's rows, of one server when `server` is given (None: every server's)."""
        clause, args = "site = ?", [domain]
        if server is not None:
            clause, args = clause + " and server = ?", [domain, server]
        return (clause + (" and " + more if more else "")), args

    def unfinished(self, domain: str, server: str | None = None) -> bool:
        """Rows of this site still pending/updating (in a one-shot CLI run: left by a dead run)."""
        where, args = self.scope(domain, server, "status in ('pending', 'updating')")
        return bool(self.db.execute(f"select 1 from deployments where {where} limit 1", args).fetchone())

    def mark_interrupted(self) -> list[int]:
        """At daemon start: deployments a dead process left pending/updating become failed,
        transient (so they are retried), with the reason recorded."""
        ids = [row["id"] for row in self.db["deployments"].rows_where("status in ('pending', 'updating')")]
        for deployment_id in ids:
            self.update_deployment(deployment_id, status=DeployStatus.FAILED, transient=1, completed_at=utcnow(),
                                   message="interrupted: the reconciler stopped during this deployment")
        return ids

    def mark_cleaned(self, domain: str, release: str, server: str | None = None) -> None:
        """A half-built release was removed: its deployment is over, and it failed."""
        row = self.by_release(domain, release, server)
        if row is None:
            return
        values: dict[str, Any] = {"deployment_path": None}
        if row["status"] in UNFINISHED:
            values.update(status=DeployStatus.FAILED, transient=1, completed_at=utcnow(),
                          message="interrupted: the reconciler stopped during this deployment")
        self.update_deployment(row["id"], **values)

    def retire(self, domain: str, release: str, server: str) -> None:
        """A release of `server` is built again under the same name (a site on many servers keeps
        one name everywhere): the earlier attempt's row stays in history as `<release>#<n>`."""
        row = self.by_release(domain, release, server)
        if row is None:
            return
        taken = {r["release"] for r in self.db["deployments"].rows_where(*self.scope(domain, server))}
        n = 1
        while f"{release}#{n}" in taken:
            n += 1
        self.update_deployment(row["id"], release=f"{release}#{n}", deployment_path=None)

    def deployment(self, deployment_id: int) -> DeploymentRow | None:
        rows = list(self.db["deployments"].rows_where("id = ?", [deployment_id]))
        return cast(DeploymentRow, rows[0]) if rows else None

    def deployments(self, domain: str) -> list[DeploymentRow]:
        """Newest first. Release names do not sort as text, so order by start time, then id."""
        return cast(list[DeploymentRow], list(self.db["deployments"].rows_where(
            "site = ?", [domain], order_by="started_at desc, id desc")))

    def latest_deployment(self, domain: str) -> DeploymentRow | None:
        """The site's newest deployment row, of any server (what a pass last set out to build)."""
        rows = list(self.db["deployments"].rows_where("site = ?", [domain], order_by="started_at desc, id desc",
                                                      limit=1))
        return cast(DeploymentRow, rows[0]) if rows else None

    def release_rows(self, domain: str, release: str) -> list[DeploymentRow]:
        """Every server's row of `release` (a site on many servers has one per server)."""
        return cast(list[DeploymentRow], list(self.db["deployments"].rows_where(
            "site = ? and release = ?", [domain, release], order_by="id")))

    def by_release(self, domain: str, release: str, server: str | None = None) -> DeploymentRow | None:
        where, args = self.scope(domain, server, "release = ?")
        rows = list(self.db["deployments"].rows_where(where, [*args, release]))
        return cast(DeploymentRow, rows[0]) if rows else None

    def failures(self, domain: str, server: str | None = None) -> Iterator[tuple[str, str, str]]:
        """(commit, build key, message) of every non-transient failed deployment not forgiven."""
        where, args = self.scope(domain, server, "status = 'failed' and coalesce(transient, 0) = 0 "
                                                  "and coalesce(forgiven, 0) = 0")
        for row in self.db["deployments"].rows_where(where, args):
            if row["commit_sha"] and row["build_key"]:
                yield row["commit_sha"], row["build_key"], row["message"] or "deployment failed"

    def forgiven(self, domain: str, server: str | None = None) -> set[str]:
        """Releases whose failure an operator forgave (`retry`): their manifests on the server no
        longer count as remembered failures."""
        where, args = self.scope(domain, server, "coalesce(forgiven, 0) = 1")
        return {row["release"] for row in self.db["deployments"].rows_where(where, args, select="release")}

    def forgive(self, domain: str) -> int:
        """Forget every remembered failure of the site; returns how many were forgiven."""
        cursor = self.db.execute(
            "update deployments set forgiven = 1 where site = ? and status = 'failed' and coalesce(forgiven, 0) = 0",
            [domain])
        return int(cursor.rowcount)

    def unforgive(self, domain: str, release: str) -> None:
        """`release` failed again after its failure was forgiven (its health check, checked
        again): remembered once more, so it is not checked again every pass."""
        self.db.execute("update deployments set forgiven = 0 where site = ? and release = ?", [domain, release])

    # -- imperative requests (retry, redeploy) ---------------------------------------------

    def request(self, domain: str, kind: RequestKind, by: str, after: str | None = None) -> None:
        self.db["requests"].upsert({"site": domain, "kind": kind, "by": by, "at": utcnow(),  # type: ignore[union-attr]
                                    "after": after}, pk="site")

    def pending_request(self, domain: str) -> RequestRow | None:
        rows = list(self.db["requests"].rows_where("site = ?", [domain]))
        return cast(RequestRow, rows[0]) if rows else None

    def clear_request(self, domain: str, at: str) -> None:
        """Drop the site's request made at `at` (a newer one, made meanwhile, stays)."""
        self.db.execute("delete from requests where site = ? and at = ?", [domain, at])
