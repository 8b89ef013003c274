"""The state database's schema (engine/schema.py): applied to a new file it makes every table
the Store reads, each migration once; a database made before deployments were per server is
migrated in place, its rows given their site's server and the one-name-per-site index replaced by
one name per (site, server). Real SQLite files."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from reconciler.engine.schema import migrations
from reconciler.engine.store import Store


def test_a_new_database_gets_every_table_and_each_migration_once(tmp_path: Path) -> None:
    db = sqlite_utils.Database(tmp_path / "state.db")
    migrations.apply(db)
    assert {"sites", "deployments", "meta", "requests", "servers", "activations", "site_servers"} \
        <= set(db.table_names())
    columns = set(db["deployments"].columns_dict)
    assert {"server", "once", "trigger", "requested_by", "forgiven", "commit_author", "commit_subject"} <= columns
    assert {"reload_owed", "reload_owed_reason"} <= set(db["sites"].columns_dict)
    assert "after" in db["requests"].columns_dict
    migrations.apply(db)  # a second time: nothing pending, nothing fails (a column added twice would)
    assert set(db["deployments"].columns_dict) == columns


def test_rows_from_before_per_server_deployments_take_their_sites_server(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="m009_deployment_server")
    assert "server" not in old["deployments"].columns_dict
    old["sites"].insert({"domain": "a.example.com", "server": "web-1"})  # type: ignore[union-attr]
    old["deployments"].insert({"id": 1, "site": "a.example.com", "release": "06122026-120000",  # type: ignore[union-attr]
                               "status": "success"})
    old.close()
    store = Store(path)  # opening applies the pending migrations
    try:
        (row,) = store.deployments("a.example.com")
        assert row["server"] == "web-1"
        # The same name on another server of the site is its own row now.
        store.start_deployment(site="a.example.com", server="web-2", release="06122026-120000", status="success",
                               started_at="2026-12-06T12:00:00Z")
        assert sorted(r["server"] for r in store.release_rows("a.example.com", "06122026-120000")) == ["web-1", "web-2"]
        unique = [i.columns for i in store.db["deployments"].indexes if i.unique]  # type: ignore[union-attr]
        assert unique == [["site", "server", "release"]], unique
    finally:
        store.close()
