"""Adoption (engine/adoption.py): the servers are the truth. A lost database is rebuilt from the
releases a server holds (their manifests, or a bare checkout's HEAD); under the site's lock rows
that a dead process left pending take their release's final status or become interrupted
failures; a release gone from the server loses its path. Releases built for real on a recording
server (tests/support/engine_rig.py), facts as the probe reads them, real state databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.status import DeployStatus
from reconciler.engine import building
from reconciler.engine.adoption import adopt
from reconciler.engine.store import Store
from tests.support import git
from tests.support.engine_rig import DOMAIN, Rig, engine_rig

OLD, GOOD, BAD = "06122026-100000", "06122026-110000", "06122026-120000"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A server holding OLD (success), GOOD (success, live) and BAD (a failed script)."""
    with engine_rig(tmp_path) as made:
        commit = git(made.app, "rev-parse", "HEAD")
        good = made.context(made.site())
        for release in (OLD, GOOD):
            assert asyncio.run(building.deploy(good, release, commit)).ok
        bad = made.context(made.site(script="exit 4\n"))
        assert not asyncio.run(building.deploy(bad, BAD, commit)).ok
        yield made


@pytest.fixture
def blank(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "lost" / "reconciler.db")
    try:
        yield store
    finally:
        store.close()


def test_a_lost_database_is_rebuilt_from_the_servers_manifests(rig: Rig, blank: Store) -> None:
    facts = rig.facts(rig.site())
    assert adopt(blank, DOMAIN, facts, server="web-1") is True
    rows = {r["release"]: r for r in blank.deployments(DOMAIN)}
    assert {name: r["status"] for name, r in rows.items()} == {
        OLD: DeployStatus.SUCCESS, GOOD: DeployStatus.SUCCESS, BAD: DeployStatus.FAILED}
    before = {r["release"]: r for r in rig.store.deployments(DOMAIN)}
    for name, row in rows.items():
        assert row["server"] == "web-1"
        assert row["commit_sha"] == before[name]["commit_sha"] and row["commit_subject"] == "v1"
        assert row["deployment_path"] == facts.paths.release(name)
    assert adopt(blank, DOMAIN, rig.facts(rig.site()), server="web-1") is False, "nothing more to write"


def test_a_release_without_a_manifest_is_adopted_as_a_success_named_by_its_time(rig: Rig, blank: Store) -> None:
    """A release made by something else (an existing fleet): its checkout's HEAD is its commit."""
    adopted = "06122026-090000"
    release = rig.on("web-1").root / "deployments" / DOMAIN / adopted
    git(rig.tmp, "clone", "-q", str(rig.app), str(release))
    adopt(blank, DOMAIN, rig.facts(rig.site()), server="web-1")
    row = blank.by_release(DOMAIN, adopted, "web-1")
    assert row is not None
    assert (row["status"], row["message"]) == (DeployStatus.SUCCESS, "adopted from the server"), row
    assert row["commit_sha"] == git(rig.app, "rev-parse", "HEAD")
    assert row["started_at"] == "2026-12-06T09:00:00Z"


def test_under_the_lock_a_dead_runs_rows_take_the_final_status_or_fail_as_interrupted(rig: Rig) -> None:
    never = "06122026-130000"
    good = rig.store.by_release(DOMAIN, GOOD, "web-1")
    assert good is not None
    rig.store.update_deployment(good["id"], status=DeployStatus.UPDATING)
    rig.store.start_deployment(site=DOMAIN, server="web-1", release=never, status=DeployStatus.PENDING,
                               started_at="2026-12-06T13:00:00Z")
    facts = rig.facts(rig.site())
    adopt(rig.store, DOMAIN, facts, server="web-1")
    assert rig.store.unfinished(DOMAIN), "without the lock another process may still be building them"
    assert adopt(rig.store, DOMAIN, facts, locked=True, server="web-1") is True
    rows = {r["release"]: r for r in rig.store.deployments(DOMAIN)}
    assert rows[GOOD]["status"] == DeployStatus.SUCCESS, "its manifest says how it ended"
    assert (rows[never]["status"], rows[never]["transient"]) == (DeployStatus.FAILED, 1)
    assert rows[never]["message"].startswith("interrupted"), rows[never]
    assert not rig.store.unfinished(DOMAIN)


def test_a_release_gone_from_the_server_loses_its_path_but_keeps_its_history(rig: Rig) -> None:
    asyncio.run(_remove(rig, OLD))
    adopt(rig.store, DOMAIN, rig.facts(rig.site()), server="web-1")
    rows = {r["release"]: r for r in rig.store.deployments(DOMAIN)}
    assert rows[OLD]["deployment_path"] is None and rows[OLD]["status"] == DeployStatus.SUCCESS
    assert rows[GOOD]["deployment_path"] is not None


def test_a_final_manifest_corrects_a_row_that_says_otherwise(rig: Rig) -> None:
    bad = rig.store.by_release(DOMAIN, BAD, "web-1")
    assert bad is not None
    rig.store.update_deployment(bad["id"], status=DeployStatus.SUCCESS)
    adopt(rig.store, DOMAIN, rig.facts(rig.site()), server="web-1")
    again = rig.store.by_release(DOMAIN, BAD, "web-1")
    assert again is not None and again["status"] == DeployStatus.FAILED


async def _remove(rig: Rig, release: str) -> None:
    from reconciler.remote.protocol import site_steps

    ctx = rig.context(rig.site())
    command = site_steps.remove_releases(ctx.paths, [release])
    assert (await ctx.transport.run(command.text, stdin=command.stdin, timeout=10)).ok
