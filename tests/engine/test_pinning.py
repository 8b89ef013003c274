"""Rollback is a commit (engine/pinning.py): `pin` written into or removed from a site's file and
committed on the branch tip's tree, the operator's comments and layout kept, unrelated work in a
checkout left alone (a clean copy of the file refreshed), the operator as author and the
reconciler as committer; a branch that moved meanwhile is refused, not overwritten; with a Git
host the commit is handed to `publish` and the branch does not move here. Real git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine import pinning
from reconciler.errors import DeclarationError, PinConflict, SigningError
from tests.support import git, make_decl_repo, settings_for, site_file, write_site
from tests.support.layers import write_defaults, write_template

DOMAIN = "shop.example.com"
PIN = "06122026-120000"
TEXT = ('# the shop: ask ops before changing\nserver = "web-1"   # the big one\nbase_path = "/srv"\n'
        'repository = "git@example.com:acme/shop.git"\n')


@pytest.fixture
def decl(tmp_path: Path) -> Path:
    repo = make_decl_repo(tmp_path / "decl")
    write_site(repo, DOMAIN, raw=TEXT)
    return repo


def _committed(repo: Path, ref: str = "main") -> str:
    return git(repo, "show", f"{ref}:sites.d/{DOMAIN}.toml") + "\n"


def test_a_pin_is_committed_with_the_operators_comments_kept(decl: Path) -> None:
    tip = git(decl, "rev-parse", "main")
    commit = pinning.set_pin(decl, "main", DOMAIN, PIN, author="Alice Ops <alice@example.com>")
    assert git(decl, "rev-parse", "main") == commit and git(decl, "rev-parse", "main~1") == tip
    assert _committed(decl) == TEXT + f'pin = "{PIN}"\n'
    assert pinning.current_pin(decl, "main", DOMAIN) == PIN
    assert git(decl, "log", "-1", "--format=%an <%ae>|%cn|%s") == \
        f"Alice Ops <alice@example.com>|reconciler|rollback {DOMAIN} to release {PIN}"


def test_an_unpin_removes_the_pin_and_an_unpinned_site_cannot_be_unpinned(decl: Path) -> None:
    pinning.set_pin(decl, "main", DOMAIN, PIN)
    pinning.set_pin(decl, "main", DOMAIN, None)
    assert _committed(decl) == TEXT and pinning.current_pin(decl, "main", DOMAIN) is None
    assert git(decl, "log", "-1", "--format=%s") == f"unpin {DOMAIN}: follow its branch again"
    tip = git(decl, "rev-parse", "main")
    with pytest.raises(DeclarationError, match="is not pinned"):
        pinning.set_pin(decl, "main", DOMAIN, None)
    assert git(decl, "rev-parse", "main") == tip


def test_an_unknown_site_a_bad_pin_or_a_bad_author_commits_nothing(decl: Path) -> None:
    tip = git(decl, "rev-parse", "main")
    with pytest.raises(DeclarationError, match="no such site"):
        pinning.set_pin(decl, "main", "other.example.com", PIN)
    with pytest.raises(DeclarationError, match="invalid declaration"):
        pinning.set_pin(decl, "main", DOMAIN, "not-a-release")
    with pytest.raises(DeclarationError, match="is not 'Name <email>'"):
        pinning.set_pin(decl, "main", DOMAIN, PIN, author="nobody")
    assert git(decl, "rev-parse", "main") == tip
    assert pinning.current_pin(decl, "main", "other.example.com") is None


def test_unrelated_work_in_the_checkout_is_left_alone_and_a_clean_copy_refreshed(decl: Path) -> None:
    write_site(decl, "blog.example.com", commit=False, server="web-2", base_path="/srv", repository="r")
    git(decl, "add", "sites.d/blog.example.com.toml")  # staged, not committed
    (decl / "README").write_text("an edit in progress\n")
    pinning.set_pin(decl, "main", DOMAIN, PIN)
    assert git(decl, "show", "--stat", "--format=", "main").count("|") == 1, "the pin commit holds one file"
    assert (decl / "README").read_text() == "an edit in progress\n"
    assert "blog.example.com.toml" in git(decl, "diff", "--cached", "--name-only")
    assert site_file(decl, DOMAIN).read_text() == _committed(decl), "the clean copy follows the commit"
    assert DOMAIN not in git(decl, "status", "--porcelain")


def test_a_locally_edited_site_file_is_not_overwritten(decl: Path) -> None:
    edited = TEXT + "# my local note\n"
    site_file(decl, DOMAIN).write_text(edited)
    pinning.set_pin(decl, "main", DOMAIN, PIN)
    assert site_file(decl, DOMAIN).read_text() == edited
    assert _committed(decl).endswith(f'pin = "{PIN}"\n')


def test_a_branch_that_moved_meanwhile_is_refused_not_overwritten(decl: Path) -> None:
    stale = git(decl, "rev-parse", "main")
    write_site(decl, "blog.example.com", server="web-2", base_path="/srv", repository="r")
    moved = git(decl, "rev-parse", "main")
    with pytest.raises(PinConflict, match="moved while committing the pin"):
        pinning._advance(decl, "main", stale, stale, "rollback", DOMAIN)
    assert git(decl, "rev-parse", "main") == moved


def test_with_a_git_host_the_commit_is_published_and_the_branch_does_not_move_here(decl: Path) -> None:
    tip = git(decl, "rev-parse", "main")
    published: list[tuple[str, str]] = []
    commit = pinning.set_pin(decl, "main", DOMAIN, PIN, publish=lambda new, on: published.append((new, on)))
    assert published == [(commit, tip)]
    assert git(decl, "rev-parse", "main") == tip
    assert git(decl, "rev-parse", f"{commit}~1") == tip


def test_under_require_signed_without_a_key_nothing_is_written(decl: Path, tmp_path: Path) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    settings = settings_for(decl, tmp_path / "state", require_signed="head", allowed_signers=signers)
    tip = git(decl, "rev-parse", "main")
    with pytest.raises(SigningError, match="neither signing_key nor gpg_signing_key"):
        pinning.set_pin(decl, "main", DOMAIN, PIN, settings)
    assert git(decl, "rev-parse", "main") == tip


def test_a_site_that_takes_its_keys_from_a_template_and_the_defaults_can_be_pinned(tmp_path: Path) -> None:
    """The edited file is judged as the site it is (over the tip's defaults and its template), so a
    three-line site file that lacks `server` and `repository` of its own is pinned and unpinned."""
    repo = make_decl_repo(tmp_path / "decl")
    write_defaults(repo, 'server = "web-1"\nbase_path = "/srv"\n')
    write_template(repo, "laravel", 'repository = "git@example.com:acme/shop.git"\n')
    write_site(repo, DOMAIN, raw='template = "laravel"\n')
    pinning.set_pin(repo, "main", DOMAIN, PIN)
    assert _committed(repo) == f'template = "laravel"\npin = "{PIN}"\n'
    pinning.set_pin(repo, "main", DOMAIN, None)
    assert _committed(repo) == 'template = "laravel"\n'
