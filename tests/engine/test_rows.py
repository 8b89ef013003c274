"""The typed records rows cross the Store boundary as (engine/rows.py) are the tables' columns,
exactly: a migration that adds a column, or a record that names one that is not there, fails
here, so mypy's checks of every `row["..."]` in the engine stay true to the database."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from reconciler.core.reasons import RequestKind
from reconciler.engine import rows
from reconciler.engine.store import Store

TABLES = {"sites": rows.SiteRow, "deployments": rows.DeploymentRow, "activations": rows.ActivationRow,
          "requests": rows.RequestRow, "site_servers": rows.SiteServerRow}


@pytest.mark.parametrize(("table", "record"), TABLES.items(), ids=TABLES)
def test_a_record_has_exactly_its_tables_columns(tmp_path: Path, table: str, record: type) -> None:
    store = Store(tmp_path / "state.db")
    try:
        columns = set(store.db[table].columns_dict)
    finally:
        store.close()
    assert set(typing.get_type_hints(record)) == columns


def test_rows_read_back_are_the_records_keys(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        store.update_site("a.example.com", server="web-1", sync="Synced")
        store.start_deployment(site="a.example.com", server="web-1", release="06122026-120000", status="success",
                               started_at="2026-12-06T12:00:00Z")
        store.request("a.example.com", RequestKind.RETRY, "alice")
        site, deployment, request = (store.site("a.example.com"), store.deployments("a.example.com")[0],
                                     store.pending_request("a.example.com"))
        assert site is not None and request is not None
        assert set(site) == set(typing.get_type_hints(rows.SiteRow))
        assert set(deployment) == set(typing.get_type_hints(rows.DeploymentRow))
        assert set(request) == set(typing.get_type_hints(rows.RequestRow))
    finally:
        store.close()

