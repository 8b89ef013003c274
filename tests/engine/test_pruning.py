"""`reconciler prune` (engine/pruning.py): candidates from facts read under the site's lock, the
live release and the newest kept, removed releases' rows keep their history without a path; a dry
run takes no lock and changes nothing; a site whose lock is held or whose live release is unknown
is reported and left alone while the others go on; a site on many servers is pruned on each.
Recording servers (tests/support/engine_rig.py), a real declarations repository and state database."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.engine import building, pruning
from reconciler.engine.desired import DesiredState
from reconciler.engine.pruning import PruneResult
from reconciler.remote.protocol import locking
from tests.support import git, write_site
from tests.support.engine_rig import DOMAIN, Rig, engine_rig

OTHER = "blog.example.com"
RELEASES = ("06122026-100000", "06122026-110000", "06122026-120000", "06122026-130000")


def _declare_and_build(rig: Rig, domain: str, releases: tuple[str, ...] = RELEASES) -> None:
    """One real build per server, copied under the other names (as a server holds them), the newest live."""
    where = {"server": rig.servers[0]} if len(rig.servers) == 1 else {"servers": list(rig.servers)}
    write_site(rig.decl, domain, base_path=str(rig.base), repository=str(rig.app), **where)
    site = rig.site(domain)
    commit = git(rig.app, "rev-parse", "HEAD")
    for server in rig.servers:
        assert asyncio.run(building.deploy(rig.context(site, server), releases[0], commit)).ok
        root = rig.on(server).root
        for release in releases[1:]:
            shutil.copytree(root / "deployments" / domain / releases[0], root / "deployments" / domain / release,
                            symlinks=True)
        link = root / domain
        target = str(link.readlink())
        link.unlink()
        link.symlink_to(target.replace(releases[0], releases[-1]))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with engine_rig(tmp_path) as made:
        _declare_and_build(made, DOMAIN)
        _declare_and_build(made, OTHER, RELEASES[:2])
        made.clear()
        yield made


def _prune(rig: Rig, only: str | None = None, keep: int | None = 1, dry_run: bool = False) -> list[PruneResult]:
    return asyncio.run(pruning.prune(rig.bench, DesiredState(rig.bench), only, keep, dry_run))


def test_prune_keeps_the_live_and_newest_releases_under_the_lock(rig: Rig) -> None:
    results = {r.domain: r for r in _prune(rig)}
    assert results[DOMAIN] == PruneResult(DOMAIN, list(RELEASES[:3]), True)
    assert results[OTHER] == PruneResult(OTHER, [RELEASES[0]], True)
    assert rig.releases("web-1") == [RELEASES[3]] and rig.live("web-1") == RELEASES[3]
    rows = {r["release"]: r["deployment_path"] for r in rig.store.deployments(DOMAIN)}
    assert [name for name, path in sorted(rows.items()) if path is None] == list(RELEASES[:3])
    assert rig.on("web-1").count(locking.LOCK_ACQUIRED) == 2, "each site pruned under its lock"
    assert not (rig.on("web-1").root / "deployments" / DOMAIN / ".reconciler-lock").exists()


def test_a_dry_run_takes_no_lock_and_changes_nothing(rig: Rig) -> None:
    results = _prune(rig, only=DOMAIN, keep=2, dry_run=True)
    assert results == [PruneResult(DOMAIN, list(RELEASES[:2]), False)]
    assert rig.releases("web-1") == list(RELEASES)
    assert rig.on("web-1").count(locking.LOCK_ACQUIRED) == 0 and len(rig.on("web-1").sent) == 1


def test_a_site_whose_lock_is_held_is_reported_and_the_others_go_on(rig: Rig) -> None:
    ctx = rig.context(rig.site(OTHER))

    async def go() -> list[PruneResult]:
        async with rig.bench.site_lock(ctx, "deploy"):
            return await pruning.prune(rig.bench, DesiredState(rig.bench), None, 1, False)

    results = {r.domain: r for r in asyncio.run(go())}
    assert not results[OTHER].done and results[OTHER].releases == [] and results[OTHER].message, results[OTHER]
    assert results[DOMAIN].done and rig.releases("web-1") == [RELEASES[3]]
    assert rig.releases("web-1", OTHER) == list(RELEASES[:2])


def test_a_site_without_a_live_release_is_not_pruned(rig: Rig) -> None:
    (rig.on("web-1").root / OTHER).unlink()
    (result,) = _prune(rig, only=OTHER, keep=0)
    assert result == PruneResult(OTHER, [], False, "active release unknown; not pruning")
    assert rig.releases("web-1", OTHER) == list(RELEASES[:2])


def test_a_site_of_another_shard_is_skipped_with_why(rig: Rig) -> None:
    for shard in ("1/2", "2/2"):
        rig.bench.settings = rig.bench.settings.model_copy(update={"shard": shard})
        desired = DesiredState(rig.bench)
        desired.owned(desired.load())
        if DOMAIN in desired.skipped:
            (result,) = _prune(rig, only=DOMAIN)
            assert result == PruneResult(DOMAIN, [], False, desired.skipped[DOMAIN])
            assert rig.releases("web-1") == list(RELEASES)
            return
    pytest.fail("one of two shards must skip the site")


def test_a_site_on_many_servers_is_pruned_on_each(tmp_path: Path) -> None:
    with engine_rig(tmp_path, ("web-1", "web-2")) as rig:
        _declare_and_build(rig, DOMAIN, RELEASES[:3])
        (rig.on("web-2").root / DOMAIN).unlink()
        results = _prune(rig, keep=1)
        assert [(r.server, r.done, r.releases) for r in results] == [
            ("web-1", True, [RELEASES[0], RELEASES[1]]), ("web-2", False, [])]
        assert results[1].message == "web-2: active release unknown; not pruning"
        assert rig.releases("web-1") == [RELEASES[2]] and rig.releases("web-2") == list(RELEASES[:3])
