"""The declarations a command shows and acts on (cli.applied): with require_signed off, those of
the branch tip (committed, not the work tree's), local sites refused unless the settings allow
them; `applied_or_none` turns unreadable declarations into None and a warning, so a look-only
command can still show the state database. The require_signed way is tests/engine/test_trust.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli.applied import applied, applied_or_none
from reconciler.cli.invocation import Invocation
from reconciler.errors import DeclarationError
from tests.support import git, make_decl_repo, write_config, write_site

DOMAIN = "shop.example.com"


def _invocation(tmp_path: Path, decl: Path, allow_local: bool | None = True) -> Invocation:
    config = write_config(tmp_path / "reconciler.toml", repo=decl, state=tmp_path / "state", interval=None,
                          allow_local=allow_local)
    return Invocation(str(config), {})


def test_the_branch_tip_is_applied_not_the_work_tree(tmp_path: Path) -> None:
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path="/srv/www", repository="/srv/git/app.git")
    write_site(decl, "draft.example.com", commit=False, server="local", base_path="/srv/www",
               repository="/srv/git/app.git")
    decls = applied(_invocation(tmp_path, decl))
    assert decls.commit == git(decl, "rev-parse", "main")
    assert list(decls.sites) == [DOMAIN] and not decls.invalid


def test_a_local_site_is_refused_without_allow_local(tmp_path: Path) -> None:
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path="/srv/www", repository="/srv/git/app.git")
    decls = applied(_invocation(tmp_path, decl, allow_local=None))
    assert not decls.sites and list(decls.invalid) == [DOMAIN]
    assert any("allow_local = true" in line for line in decls.errors), decls.errors


def test_unreadable_declarations_raise_or_are_none_with_a_warning(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    invocation = _invocation(tmp_path, tmp_path / "no-such-repo")
    with pytest.raises(DeclarationError):
        applied(invocation)
    assert applied_or_none(invocation) is None
    err = capsys.readouterr().err
    assert err.startswith("reconciler: warning: ") and err.rstrip().endswith("showing the state database only"), err
    assert not (tmp_path / "state").exists()
