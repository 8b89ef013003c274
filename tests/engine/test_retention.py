"""engine/retention.py over a real SQLite file and real log files: history and logs older than
`retention_days` are forgotten, but never a row of a release still on a server, live, unfinished,
or the latest of its site on a server, nor the latest activation of a site; a log no row names
goes once it is as old; nothing outside state_dir/logs is ever deleted; a dry run counts and
deletes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.reasons import SwitchReason
from reconciler.engine.retention import Expired, expire
from reconciler.engine.store import Store

SITE, OTHER = "a.example.com", "b.example.com"
NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
OLD, RECENT = "2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z"  # 30 days: before and after the cutoff


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "state" / "reconciler.db")
    try:
        yield opened
    finally:
        opened.close()


def _row(store: Store, logs: Path, release: str, at: str, *, site: str = SITE, server: str = "web-1",
         status: str = "success", on_server: bool = False) -> tuple[int, Path]:
    deployment = store.start_deployment(site=site, server=server, release=release, status=status,
                                        commit_sha="a" * 40, started_at=at, completed_at=at,
                                        deployment_path=f"/srv/{release}" if on_server else None)
    log = logs / site / f"{deployment}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("==> built\n")
    store.update_deployment(deployment, local_log=str(log))
    return deployment, log


def _ids(store: Store) -> set[int]:
    return {row["id"] for row in store.db.query("select id from deployments")}


def test_old_rows_of_releases_gone_from_their_servers_are_forgotten_with_their_logs(store: Store,
                                                                                   tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs"
    gone, gone_log = _row(store, logs, "01012026-000000", OLD)
    kept_on_server, _ = _row(store, logs, "02012026-000000", OLD, on_server=True)
    unfinished, _ = _row(store, logs, "03012026-000000", OLD, status="updating")
    live, _ = _row(store, logs, "04012026-000000", OLD)
    store.update_site(SITE, active_release="04012026-000000")
    recent, _ = _row(store, logs, "01122026-000000", RECENT)
    latest, _ = _row(store, logs, "02122026-000000", RECENT)
    # Another server's and another site's only rows are their latest: kept however old.
    other_server, _ = _row(store, logs, "01012026-000000", OLD, server="web-2")
    other_site, other_log = _row(store, logs, "01012026-000000", OLD, site=OTHER)
    assert expire(store, logs, 30, NOW) == Expired(deployments=1, activations=0, logs=1)
    assert _ids(store) == {kept_on_server, unfinished, live, recent, latest, other_server, other_site}
    assert not gone_log.exists() and other_log.exists()
    assert gone not in _ids(store)
    assert expire(store, logs, 30, NOW) == Expired(), "nothing left to forget"


def test_the_latest_row_of_a_site_stays_however_old(store: Store, tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs"
    first, _ = _row(store, logs, "01012026-000000", OLD, status="failed")
    last, last_log = _row(store, logs, "02012026-000000", "2026-01-02T00:00:00Z", status="failed")
    expire(store, logs, 30, NOW)
    assert _ids(store) == {last} and last_log.exists(), "the failure the site remembers stays"
    assert first not in _ids(store)


def test_old_activations_go_but_a_sites_latest(store: Store, tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs"
    for at in (OLD, "2026-01-02T00:00:00Z"):
        store.record_activation(SITE, "r", None, at, SwitchReason.ROLLBACK, "ann")
    store.record_activation(OTHER, "r", None, OLD, SwitchReason.ROLLBACK, "ann")
    assert expire(store, logs, 30, NOW).activations == 1
    assert [a["at"] for a in store.activations(SITE)] == ["2026-01-02T00:00:00Z"]
    assert len(store.activations(OTHER)) == 1


def test_an_old_log_no_row_names_goes_and_a_recent_one_stays(store: Store, tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs"
    (logs / SITE).mkdir(parents=True)
    stale, fresh = logs / SITE / "7.log", logs / SITE / "8.log"
    stale.write_text("old\n")
    fresh.write_text("new\n")
    os.utime(stale, (NOW.timestamp() - 40 * 86400,) * 2)
    os.utime(fresh, (NOW.timestamp() - 5 * 86400,) * 2)
    assert expire(store, logs, 30, NOW).logs == 1
    assert not stale.exists() and fresh.exists()


def test_a_row_naming_a_file_outside_the_logs_never_deletes_it(store: Store, tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs"
    precious = tmp_path / "precious.log"
    precious.write_text("keep me\n")
    gone, _ = _row(store, logs, "01012026-000000", OLD)
    store.update_deployment(gone, local_log=str(precious))
    _row(store, logs, "02122026-000000", RECENT)
    assert expire(store, logs, 30, NOW) == Expired(deployments=1, activations=0, logs=0)
    assert precious.read_text() == "keep me\n"


def test_a_dry_run_counts_and_deletes_nothing(store: Store, tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs"
    _, log = _row(store, logs, "01012026-000000", OLD)
    _row(store, logs, "02122026-000000", RECENT)
    before = _ids(store)
    assert expire(store, logs, 30, NOW, dry_run=True) == Expired(deployments=1, activations=0, logs=1)
    assert _ids(store) == before and log.exists()


def test_what_was_forgotten_is_said_in_one_line() -> None:
    assert Expired(2, 1, 2).describe(30) == "history: forgot 2 deployments, 1 activation and 2 logs older than 30 days"
    assert Expired(1, 0, 1).describe(7, dry_run=True).startswith("history: would forget 1 deployment, ")
    assert Expired().describe(30) == "history: nothing older than 30 days to forget"
