"""Desired state from git (engine/source.py): only committed content counts (not the work tree,
not the index), a branch tip is re-resolved on every call, a directory inside another repository
is not silently that repository, and commits are named, compared and described from real git
repositories in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine import source
from reconciler.errors import DeclarationError
from tests.support import git, make_decl_repo, site_file, write_site

DOMAIN = "shop.example.com"
SITE = {"server": "web-1", "base_path": "/srv", "repository": "git@example.com:acme/shop.git"}


@pytest.fixture
def decl(tmp_path: Path) -> Path:
    repo = make_decl_repo(tmp_path / "decl")
    write_site(repo, DOMAIN, **SITE)
    return repo


def test_only_the_committed_tree_counts_not_the_work_tree_or_the_index(decl: Path) -> None:
    committed = source.load(decl, "main")
    site_file(decl, DOMAIN).write_text('server = "web-9"\nbase_path = "/x"\nrepository = "r"\n')
    write_site(decl, "new.example.com", commit=False, **SITE)
    git(decl, "add", "-A")  # staged, not committed
    now = source.load(decl, "main")
    assert set(now.sites) == {DOMAIN} and now.sites[DOMAIN].server == "web-1"
    assert now.commit == committed.commit == git(decl, "rev-parse", "HEAD")
    assert "new.example.com" in source.load_directory(decl).sites, "validate reads the files as they are"


def test_the_tip_is_read_again_on_every_call(decl: Path) -> None:
    first = source.tip_commit(decl, "main")
    write_site(decl, "blog.example.com", **SITE)
    second = source.tip_commit(decl, "main")
    assert first != second == git(decl, "rev-parse", "HEAD")
    git(decl, "pack-refs", "--all")
    assert source.tip_commit(decl, "main") == second, "a packed ref is the same tip"
    assert set(source.load(decl, "main").sites) == {DOMAIN, "blog.example.com"}


def test_a_missing_branch_or_an_empty_repository_is_a_declaration_error(decl: Path, tmp_path: Path) -> None:
    with pytest.raises(DeclarationError, match="branch 'prod' does not exist"):
        source.tip_commit(decl, "prod")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    with pytest.raises(DeclarationError, match="does not exist"):
        source.load(empty, "main")


def test_a_directory_inside_a_repository_is_not_that_repository(decl: Path) -> None:
    with pytest.raises(DeclarationError, match="not a git repository"):
        source.open_repository(decl / "sites.d")


def test_commits_are_resolved_compared_and_described(decl: Path) -> None:
    old = git(decl, "rev-parse", "HEAD")
    write_site(decl, "blog.example.com", **SITE)
    new = git(decl, "rev-parse", "HEAD")
    assert source.resolve_commit(decl, old[:8]) == old
    assert source.resolve_commit(decl, "main") == new
    assert source.resolve_commit(decl, "main~1") == old
    with pytest.raises(DeclarationError, match="names no commit"):
        source.resolve_commit(decl, "no-such-ref")
    assert source.descends(decl, new, old) and source.descends(decl, old, old)
    assert not source.descends(decl, old, new)
    assert not source.descends(decl, new, "f" * 40), "an unknown commit is no ancestor"
    name, email = git(decl, "log", "-1", "--format=%an"), git(decl, "log", "-1", "--format=%ae")
    assert source.author_of(decl, new) == f"{name} <{email}>"
    assert source.author_of(decl, "f" * 40) == ""


def test_a_commit_without_sites_is_empty_and_a_bad_id_is_refused(decl: Path) -> None:
    first = git(decl, "rev-list", "--max-parents=0", "HEAD")
    empty = source.load_commit(decl, first)
    assert (empty.commit, empty.sites, empty.invalid) == (first, {}, {})
    with pytest.raises(DeclarationError, match="not found"):
        source.load_commit(decl, "f" * 40)
    with pytest.raises(DeclarationError, match="not an object id"):
        source.load_commit(decl, "xyz")
