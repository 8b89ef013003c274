"""Desired state from git (engine/source.py): only committed content counts (not the work tree,
not the index), a branch tip is re-resolved on every call, a directory inside another repository
is not silently that repository, and commits are named, compared and described from real git
repositories in tmp_path. Loading sites.d (from a branch, a bare repository, packed refs, a plain
directory): every file a site or an invalid entry, symlinks and executables refused, a missing
branch or repository a declaration error."""

from __future__ import annotations

import os
import subprocess
from functools import partial
from pathlib import Path

import pytest

from reconciler.core.declarations import MAX_FILE_BYTES
from reconciler.core.layers import Layers
from reconciler.engine import source
from reconciler.engine.source import load, load_directory
from reconciler.errors import DeclarationError
from tests.support import git, make_decl_repo, site_file, write_site
from tests.support.layers import write_defaults, write_template
from tests.support.site_text import BASE, render

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


# --- loading sites.d from a repository or a directory ---------------------------------------------

# declare(repo, domain, commit=True, **fields): sites.d/<domain>.toml of BASE plus `fields`.
declare = partial(write_site, **BASE)


def test_load_reads_the_named_branch(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com", keep=5)
    git(repo, "checkout", "-q", "-b", "prod")
    declare(repo, "shop.example.com", keep=9)
    declare(repo, "prod.example.com")
    git(repo, "checkout", "-q", "main")  # the work tree is on main; prod is still read from its commit
    main, prod = load(repo, "main"), load(repo, "prod")
    assert set(main.sites) == {"shop.example.com"}
    assert main.sites["shop.example.com"].keep == 5
    assert set(prod.sites) == {"shop.example.com", "prod.example.com"}
    assert prod.sites["shop.example.com"].keep == 9
    assert prod.commit == git(repo, "rev-parse", "prod")


def test_load_bare_repository(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com", branch="feature/x")
    declare(repo, "bad.example.com", keep=0)
    bare = tmp_path / "sites.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    assert not (bare / "sites.d").exists()
    decls = load(bare, "main")
    assert decls.commit == git(repo, "rev-parse", "HEAD")
    assert set(decls.sites) == {"shop.example.com"}
    assert decls.sites["shop.example.com"].branch == "feature/x"
    assert set(decls.invalid) == {"bad.example.com"}


def test_load_after_gc_packed_refs(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com")
    git(repo, "pack-refs", "--all")
    git(repo, "gc", "-q")
    assert set(load(repo, "main").sites) == {"shop.example.com"}


def test_load_symlink_in_sites_d_is_invalid(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com")
    os.symlink("shop.example.com.toml", repo / "sites.d" / "alias.example.com.toml")
    os.symlink("/etc/passwd", repo / "sites.d" / "passwd.example.com.toml")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "symlinks")
    for decls in (load(repo, "main"), load_directory(repo)):
        assert set(decls.sites) == {"shop.example.com"}
        assert set(decls.invalid) == {"alias.example.com", "passwd.example.com"}
        for domain in ("alias.example.com", "passwd.example.com"):
            invalid = decls.invalid[domain]
            assert invalid.file == f"sites.d/{domain}.toml"
            assert invalid.errors[0].startswith(f"sites.d/{domain}.toml:1: ")
            assert "symlink" in invalid.message
            assert "root:" not in invalid.message  # the target is never read


def test_load_ignores_non_toml_and_subdirectories(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "shop.example.com")
    sites = repo / "sites.d"
    (sites / "README.md").write_text("not a site\n")
    (sites / "old.example.com.toml.bak").write_text("garbage = [\n")
    (sites / "notes.txt").write_text("keep = 0\n")
    (sites / "archive").mkdir()
    (sites / "archive" / "archived.example.com.toml").write_text(render(BASE))
    (repo / "other.example.com.toml").write_text(render(BASE))  # outside sites.d
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "clutter")
    for decls in (load(repo, "main"), load_directory(repo)):
        assert set(decls.sites) == {"shop.example.com"}
        assert decls.invalid == {}
        assert decls.errors == []


def test_invalid_site_does_not_stop_valid_ones(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "a.example.com")
    declare(repo, "b.example.com", keep=0)
    write_site(repo, "c.example.com", raw='server = "local"\nrepository = \n')  # TOML error
    declare(repo, "d.example.com", colour="blue")
    write_site(repo, "Upper.example.com", raw=render(BASE))
    declare(repo, "z.example.com", server="web-2")
    decls = load(repo, "main")
    assert set(decls.sites) == {"a.example.com", "z.example.com"}
    assert set(decls.invalid) == {"b.example.com", "c.example.com", "d.example.com", "Upper.example.com"}
    assert decls.sites["z.example.com"].server == "web-2"
    assert len(decls.errors) == 4
    for error in decls.errors:
        assert error.startswith("sites.d/")
    assert any(e.startswith("sites.d/b.example.com.toml:3: keep: ") for e in decls.errors)
    assert any(e.startswith("sites.d/d.example.com.toml:3: colour: unknown key") for e in decls.errors)
    assert any(e.startswith("sites.d/c.example.com.toml:2: ") for e in decls.errors)


def test_load_executable_file(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    file = declare(repo, "shop.example.com", commit=False)
    file.chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "exec")
    assert set(load(repo, "main").sites) == {"shop.example.com"}


def test_load_without_sites_d(tmp_path: Path) -> None:
    repo = tmp_path / "decl"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    decls = load(repo, "main")
    assert decls.commit == git(repo, "rev-parse", "HEAD")
    assert decls.sites == {}
    assert decls.invalid == {}


def test_load_removed_site_disappears(tmp_path: Path) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    declare(repo, "a.example.com")
    declare(repo, "b.example.com")
    git(repo, "rm", "-q", "sites.d/b.example.com.toml")
    git(repo, "commit", "-q", "-m", "remove b")
    assert set(load(repo, "main").sites) == {"a.example.com"}


@pytest.mark.parametrize("branch", ["missing", "feature/none"])
def test_load_missing_branch(tmp_path: Path, branch: str) -> None:
    repo = make_decl_repo(tmp_path / "decl")
    with pytest.raises(DeclarationError):
        load(repo, branch)


def test_load_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError):
        load(tmp_path / "nothing-here", "main")


# --------------------------------------------------------------------------- load_directory


def test_load_directory_accepts_sites_d_itself(tmp_path: Path) -> None:
    sites = tmp_path / "sites.d"
    sites.mkdir()
    (sites / "shop.example.com.toml").write_text(render({**BASE, "keep": 3}))
    (sites / "bad.example.com.toml").write_text(render({**BASE, "keep": "3"}))
    (sites / "ignored.txt").write_text("x")
    for path in (tmp_path, sites):
        decls = load_directory(path)
        assert decls.commit is None
        assert set(decls.sites) == {"shop.example.com"}
        assert decls.sites["shop.example.com"].keep == 3
        assert set(decls.invalid) == {"bad.example.com"}
        assert decls.invalid["bad.example.com"].errors[0].startswith("sites.d/bad.example.com.toml:3: keep: ")


def test_load_directory_reports_a_directory_named_like_a_site(tmp_path: Path) -> None:
    sites = tmp_path / "sites.d"
    (sites / "dir.example.com.toml").mkdir(parents=True)
    decls = load_directory(tmp_path)
    assert decls.sites == {}
    assert set(decls.invalid) == {"dir.example.com"}


def test_load_directory_oversized_file(tmp_path: Path) -> None:
    sites = tmp_path / "sites.d"
    sites.mkdir()
    (sites / "big.example.com.toml").write_bytes(render(BASE).encode() + b"#" * MAX_FILE_BYTES + b"\n")
    decls = load_directory(tmp_path)
    assert set(decls.invalid) == {"big.example.com"}
    assert decls.invalid["big.example.com"].errors[0].startswith("sites.d/big.example.com.toml:1: ")




# --- fleet defaults and templates -----------------------------------------------------------------------


def test_defaults_and_templates_are_read_from_the_commit_and_defaults_is_no_site(decl: Path) -> None:
    write_defaults(decl, "keep = 5\n")
    write_template(decl, "laravel", 'php = "8.3"\n')
    write_site(decl, "blog.example.com", template="laravel", **SITE)
    decls = load(decl, "main")
    assert set(decls.sites) == {DOMAIN, "blog.example.com"} and not decls.invalid  # no "_defaults" site
    assert decls.sites["blog.example.com"].php == "8.3" and decls.sites[DOMAIN].php is None
    assert decls.sites[DOMAIN].keep == 5 and str(decls.origins[DOMAIN]["keep"]) == "sites.d/_defaults.toml:1"
    # Another `_` file is still reported (a misspelt defaults file must not pass unnoticed).
    (decl / "sites.d" / "_default.toml").write_text("keep = 5\n")
    git(decl, "add", "-A")
    git(decl, "commit", "-q", "-m", "typo")
    assert "_default" in load(decl, "main").invalid


def test_the_blob_cache_parses_again_exactly_the_sites_whose_template_or_defaults_changed(
        decl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_template(decl, "laravel", 'php = "8.3"\n')
    write_site(decl, "a.example.com", template="laravel", **SITE)
    write_site(decl, "b.example.com", template="symfony", **SITE)  # names a template not there yet
    parsed: list[str] = []
    real = source.parse_layered

    def counting(filename: str, data: bytes | None, layers: Layers) -> object:
        parsed.append(filename)
        return real(filename, data, layers)

    monkeypatch.setattr(source, "parse_layered", counting)
    cache = source.BlobCache()
    first = source.load_commit(decl, git(decl, "rev-parse", "HEAD"), cache)
    assert "b.example.com" in first.invalid and len(parsed) == 3
    parsed.clear()
    write_template(decl, "laravel", 'php = "8.4"\n')
    moved = source.load_commit(decl, git(decl, "rev-parse", "HEAD"), cache)
    assert parsed == ["sites.d/a.example.com.toml"] and moved.sites["a.example.com"].php == "8.4"
    parsed.clear()
    write_template(decl, "symfony", 'php = "8.2"\n')  # the missing template arrives
    arrived = source.load_commit(decl, git(decl, "rev-parse", "HEAD"), cache)
    assert parsed == ["sites.d/b.example.com.toml"] and arrived.sites["b.example.com"].php == "8.2"
    parsed.clear()
    write_defaults(decl, "keep = 2\n")
    tip = git(decl, "rev-parse", "HEAD")
    assert len(source.load_commit(decl, tip, cache).sites) == 3 and len(parsed) == 3
    assert source.load_commit(decl, tip, cache) == source.load_commit(decl, tip)  # what a fresh load gives


def test_a_directory_is_validated_with_its_defaults_and_templates_beside_sites_d(decl: Path) -> None:
    write_defaults(decl, "keep = 0\n", commit=False)
    write_template(decl, "laravel", 'php = "eight"\n', commit=False)
    write_site(decl, "blog.example.com", commit=False, template="laravel", **SITE)
    for path in (decl, decl / "sites.d"):
        decls = load_directory(path)
        assert sorted(decls.errors) == ["sites.d/_defaults.toml:1: keep: must be at least 1"] * 2 + [
            "templates/laravel.toml:1: php: must look like 8.3"], decls.errors
        assert set(decls.invalid) == {DOMAIN, "blog.example.com"}
