"""The state database's schema: its migrations, in order (sqlite-utils applies the pending ones
when a Store opens the file). A migration is never edited once released: a new one follows."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("reconciler")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["sites"].create(  # type: ignore[union-attr]
        {
            "domain": str, "server": str, "base_path": str,
            "sync": str, "health": str, "message": str, "pinned": str,
            "active_release": str, "active_commit": str, "desired_commit": str,
            "active_deployment_id": int, "last_deployment_sha": str, "last_deployed_at": str,
            "declarations_commit": str, "updated_at": str,
        },
        pk="domain",
    )
    db["deployments"].create(  # type: ignore[union-attr]
        {
            "id": int, "site": str, "release": str, "status": str,
            "commit_sha": str, "branch": str, "repository": str, "build_key": str,
            "deployment_script": str, "deployment_path": str, "log_file_path": str,
            "local_log": str, "declarations_commit": str,
            "started_at": str, "completed_at": str, "duration_ms": int,
            "message": str, "exit_status": int,
            # 1 when the failure was transient (lost connection, interrupted): not remembered.
            "transient": int,
        },
        pk="id",
        not_null={"site", "status"},
    )
    db["deployments"].create_index(["site", "release"], unique=True)  # type: ignore[union-attr]


@migrations()
def m002_meta(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


@migrations()
def m003_requests(db: sqlite_utils.Database) -> None:
    # What started a deployment and who asked (history explains itself), failures an operator
    # forgave with `retry`, and the one pending imperative request per site (retry/redeploy).
    deployments = db["deployments"]
    deployments.add_column("trigger", str)  # type: ignore[union-attr]
    deployments.add_column("requested_by", str)  # type: ignore[union-attr]
    deployments.add_column("forgiven", int)  # type: ignore[union-attr]
    db["requests"].create({"site": str, "kind": str, "by": str, "at": str}, pk="site")  # type: ignore[union-attr]


@migrations()
def m004_commit_info(db: sqlite_utils.Database) -> None:
    deployments = db["deployments"]
    deployments.add_column("commit_author", str)  # type: ignore[union-attr]
    deployments.add_column("commit_subject", str)  # type: ignore[union-attr]


@migrations()
def m005_reload_owed(db: sqlite_utils.Database) -> None:
    # The live release whose reload failed after its switch, and why: retried until it succeeds.
    db["sites"].add_column("reload_owed", str)  # type: ignore[union-attr]
    db["sites"].add_column("reload_owed_reason", str)  # type: ignore[union-attr]


@migrations()
def m006_servers(db: sqlite_utils.Database) -> None:
    # When each server was last probed successfully: `status` says how old its facts are.
    db["servers"].create({"name": str, "observed_at": str}, pk="name")  # type: ignore[union-attr]


@migrations()
def m007_activations(db: sqlite_utils.Database) -> None:
    # Switches without a build (rollback, unpin, drift correction): events in history.
    db["activations"].create({"id": int, "site": str, "release": str, "previous": str, "at": str,  # type: ignore[union-attr]
                              "trigger": str, "requested_by": str}, pk="id")
    db["activations"].create_index(["site"])  # type: ignore[union-attr]


@migrations()
def m008_request_after(db: sqlite_utils.Database) -> None:
    # A redeploy names the newest release that existed when it was asked: builds named after it
    # are fresh (release names always sort after every existing one; clocks need not agree).
    db["requests"].add_column("after", str)  # type: ignore[union-attr]


@migrations()
def m009_deployment_server(db: sqlite_utils.Database) -> None:
    # A site on many servers has a release of one name on each: deployments are per server.
    db["deployments"].add_column("server", str)  # type: ignore[union-attr]
    db.execute("update deployments set server = (select server from sites where sites.domain = deployments.site)")
    for index in db["deployments"].indexes:  # type: ignore[union-attr]
        if index.unique and index.columns == ["site", "release"]:
            db.execute(f"drop index [{index.name}]")
    db["deployments"].create_index(["site", "server", "release"], unique=True)  # type: ignore[union-attr]


@migrations()
def m010_site_servers(db: sqlite_utils.Database) -> None:
    # A site on many servers: each server's own live release and why it is not in step.
    db["site_servers"].create({"site": str, "server": str, "active_release": str, "message": str},  # type: ignore[union-attr]
                              pk=("site", "server"))


@migrations()
def m011_once(db: sqlite_utils.Database) -> None:
    # A site with `script_once`: the release's run-once state ("pending" from the build, "done"
    # once it succeeded), as its first server's manifest says; null for every other row.
    db["deployments"].add_column("once", str)  # type: ignore[union-attr]


@migrations()
def m012_notices(db: sqlite_utils.Database) -> None:
    # What `[[notify]]` already said, shared by the daemon and the CLI so an event goes out once:
    # one row per (scope, event) (a site's domain, or "server NAME", "git URL", "declarations"),
    # its once-key. Bounded: a row per site and event, and per cause while it is out.
    db["notices"].create({"scope": str, "event": str, "key": str, "at": str},  # type: ignore[union-attr]
                         pk=("scope", "event"))
