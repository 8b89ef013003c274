"""The deployment rows of the state database (engine/deployment_rows.py, through the Store that
extends it): one row per (site, server, release) name, always, an earlier attempt of a name kept
in history as `<release>#<n>`; rows a dead process left unfinished become interrupted failures;
remembered failures leave out transient and forgiven ones; one pending request per site. A real
SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.reasons import RequestKind
from reconciler.core.status import DeployStatus
from reconciler.engine.store import Store

SITE = "a.example.com"
RELEASE = "06122026-120000"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "state.db")
    try:
        yield opened
    finally:
        opened.close()


def _start(store: Store, status: str, server: str = "web-1", release: str = RELEASE, **more: object) -> int:
    return store.start_deployment(site=SITE, server=server, release=release, status=status,
                                  commit_sha="a" * 40, started_at="2026-12-06T12:00:00Z", **more)


def test_a_release_started_again_under_its_name_retires_the_earlier_row(store: Store) -> None:
    """A site on many servers keeps one name everywhere; a run stopped before its directory was
    made leaves only its row: the second insert of a name must not fail on every later pass."""
    first = _start(store, DeployStatus.PENDING)
    other_server = _start(store, DeployStatus.SUCCESS, server="web-2")
    second = _start(store, DeployStatus.PENDING)
    third = _start(store, DeployStatus.PENDING)
    names = {row["id"]: row["release"] for row in store.deployments(SITE)}
    assert names[third] == RELEASE
    assert {names[first], names[second]} == {f"{RELEASE}#1", f"{RELEASE}#2"}
    assert names[other_server] == RELEASE, "another server's row of that name is its own"


def test_rows_a_dead_process_left_unfinished_become_transient_failures(store: Store) -> None:
    pending = _start(store, DeployStatus.PENDING)
    updating = _start(store, DeployStatus.UPDATING, release="06122026-130000")
    done = _start(store, DeployStatus.SUCCESS, release="06122026-110000")
    assert store.unfinished(SITE) and store.unfinished(SITE, "web-1") and not store.unfinished(SITE, "web-2")
    assert sorted(store.mark_interrupted()) == sorted([pending, updating])
    for deployment_id in (pending, updating):
        row = store.deployment(deployment_id)
        assert row is not None and (row["status"], row["transient"]) == (DeployStatus.FAILED, 1)
        assert row["message"].startswith("interrupted")
    row = store.deployment(done)
    assert row is not None and row["status"] == DeployStatus.SUCCESS
    assert not store.unfinished(SITE)


def test_a_cleaned_half_built_release_is_over_and_failed(store: Store) -> None:
    half = _start(store, DeployStatus.UPDATING, deployment_path="/srv/x")
    store.mark_cleaned(SITE, RELEASE, "web-1")
    row = store.deployment(half)
    assert row is not None
    assert (row["status"], row["deployment_path"], row["transient"]) == (DeployStatus.FAILED, None, 1)
    good = _start(store, DeployStatus.SUCCESS, release="06122026-130000", deployment_path="/srv/y")
    store.mark_cleaned(SITE, "06122026-130000", "web-1")
    row = store.deployment(good)
    assert row is not None and (row["status"], row["deployment_path"]) == (DeployStatus.SUCCESS, None)


def test_remembered_failures_leave_out_transient_and_forgiven_ones(store: Store) -> None:
    _start(store, DeployStatus.FAILED, release="06122026-100000", build_key="k1", message="exit 3")
    _start(store, DeployStatus.FAILED, release="06122026-110000", build_key="k2", transient=1)
    _start(store, DeployStatus.FAILED, server="web-2", release="06122026-100000", build_key="k3")
    assert list(store.failures(SITE, "web-1")) == [("a" * 40, "k1", "exit 3")]
    assert {key for _, key, _ in store.failures(SITE)} == {"k1", "k3"}
    assert store.forgive(SITE) == 3, "every failed row is forgiven, transient ones too"
    assert list(store.failures(SITE)) == []
    assert store.forgiven(SITE, "web-1") == {"06122026-100000", "06122026-110000"}
    assert store.forgive(SITE) == 0


def test_history_is_newest_first_by_start_time_then_id(store: Store) -> None:
    late = store.start_deployment(site=SITE, server="web-1", release="01012027-000000", status="success",
                                  started_at="2027-01-01T00:00:00Z")
    early = store.start_deployment(site=SITE, server="web-1", release="31122026-235959", status="success",
                                   started_at="2026-12-31T23:59:59Z")
    tie = store.start_deployment(site=SITE, server="web-2", release="01012027-000000", status="success",
                                 started_at="2027-01-01T00:00:00Z")
    assert [r["id"] for r in store.deployments(SITE)] == [tie, late, early]
    latest = store.latest_deployment(SITE)
    assert latest is not None and latest["id"] == tie
    assert [r["server"] for r in store.release_rows(SITE, "01012027-000000")] == ["web-1", "web-2"]


def test_a_newer_request_survives_clearing_the_one_it_replaced(store: Store) -> None:
    store.request(SITE, RequestKind.RETRY, "alice")
    first = store.pending_request(SITE)
    assert first is not None and (first["kind"], first["by"]) == (RequestKind.RETRY, "alice")
    store.db.execute("update requests set at = '2026-01-01T00:00:00Z'")
    store.request(SITE, RequestKind.REDEPLOY, "bob", after=RELEASE)
    newer = store.pending_request(SITE)
    assert newer is not None and (newer["kind"], newer["after"]) == (RequestKind.REDEPLOY, RELEASE)
    store.clear_request(SITE, "2026-01-01T00:00:00Z")
    assert store.pending_request(SITE) == newer
    store.clear_request(SITE, newer["at"])
    assert store.pending_request(SITE) is None
