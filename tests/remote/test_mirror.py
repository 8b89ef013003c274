"""The server-side repository cache: releases stay full, independent clones of the exact commit
with `origin` = the real URL; the cache is fetched incrementally, survives deletion, follows a
changed repository URL and heals when corrupt."""

from __future__ import annotations

import shutil
from pathlib import Path

from reconciler.remote.mirror import MIRROR_NAME
from tests.support import app_commit, git, make_app_repo, make_decl_repo, reconcile, settings_for, write_site

DOMAIN = "mirror.example.com"


def _setup(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, object]]:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    site: dict[str, object] = {"server": "local", "base_path": str(base), "repository": str(app), "keep": 10}
    write_site(decl, DOMAIN, **site)
    return app, decl, base, site


def _live(base: Path) -> Path:
    return (base / DOMAIN).resolve()


def _assert_full_clone(release: Path, commit: str, origin: Path) -> None:
    assert git(release, "rev-parse", "HEAD") == commit
    assert git(release, "remote", "get-url", "origin") == str(origin)
    assert not (release / ".git" / "objects" / "info" / "alternates").exists(), "must not borrow objects"
    git(release, "fsck", "--no-progress", "--connectivity-only")
    # Scripts may run git against the real origin.
    git(release, "fetch", "-q", "origin")


def test_releases_are_full_independent_clones_and_survive_cache_deletion(tmp_path: Path) -> None:
    app, decl, base, _ = _setup(tmp_path)
    settings = settings_for(decl, tmp_path / "state")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    mirror = base / "deployments" / DOMAIN / MIRROR_NAME
    assert mirror.is_dir(), "the first deploy creates the cache"
    first = _live(base)
    _assert_full_clone(first, git(app, "rev-parse", "HEAD"), app)

    head = app_commit(app, "v2")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    second = _live(base)
    assert second != first
    _assert_full_clone(second, head, app)
    assert git(mirror, "rev-parse", "refs/heads/main") == head, "the cache was fetched, not re-cloned"
    assert "(re)creating the repository cache" not in (second / "deployment.log").read_text()

    shutil.rmtree(mirror)
    for release in (first, second):
        _assert_full_clone(release, git(release, "rev-parse", "HEAD"), app)
    head = app_commit(app, "v3")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    _assert_full_clone(_live(base), head, app)
    assert mirror.is_dir(), "a deleted cache is re-created"


def test_a_changed_repository_url_is_honoured(tmp_path: Path) -> None:
    app, decl, base, site = _setup(tmp_path)
    settings = settings_for(decl, tmp_path / "state")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    moved = tmp_path / "moved-app"
    git(tmp_path, "clone", "-q", str(app), str(moved))
    head = app_commit(moved, "only in the moved repository")
    write_site(decl, DOMAIN, **{**site, "repository": str(moved)})
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    _assert_full_clone(_live(base), head, moved)
    mirror = base / "deployments" / DOMAIN / MIRROR_NAME
    assert git(mirror, "config", "--get", "remote.origin.url") == str(moved)


def test_a_corrupt_cache_is_recreated(tmp_path: Path) -> None:
    app, decl, base, _ = _setup(tmp_path)
    settings = settings_for(decl, tmp_path / "state")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    mirror = base / "deployments" / DOMAIN / MIRROR_NAME
    (mirror / "HEAD").write_text("garbage\n")  # no longer a git repository
    (mirror / "packed-refs").write_text("garbage\n")
    head = app_commit(app, "after corruption")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    _assert_full_clone(_live(base), head, app)
    assert "(re)creating the repository cache" in (_live(base) / "deployment.log").read_text()
