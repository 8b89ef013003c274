"""engine.env_edits: the env at the tip is read and decrypted (an empty one when there is no file
yet), an undeclared site is refused, and a commit made from a file that changed at the tip
meanwhile is refused with nothing committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconciler.engine import env_edits
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from reconciler.errors import PinConflict, UnknownSite
from tests.support import git, make_decl_repo, write_site
from tests.support.age_keys import age_key, seal, write_recipients
from tests.support.config import settings_for

DOMAIN = "shop.example.com"


def _reconciler(tmp_path: Path) -> tuple[Reconciler, Path, str]:
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path="/srv", repository="r")
    key = age_key(tmp_path / "k")
    write_recipients(decl, key.public)
    settings = settings_for(decl, tmp_path / "state", age_identity_file=key.identity_file)
    (tmp_path / "state").mkdir()
    return Reconciler(settings, Store(settings.db_path)), decl, key.public


def test_read_gives_the_text_or_empty_and_refuses_an_undeclared_site(tmp_path: Path) -> None:
    reconciler, decl, public = _reconciler(tmp_path)
    empty = asyncio.run(env_edits.read(reconciler, DOMAIN))
    assert (empty.text, empty.data) == ("", None)
    seal(decl, DOMAIN, "A=1\n", public)
    assert asyncio.run(env_edits.read(reconciler, DOMAIN)).text == "A=1\n"
    with pytest.raises(UnknownSite):
        asyncio.run(env_edits.read(reconciler, "blog.example.com"))


def test_a_file_changed_at_the_tip_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    reconciler, decl, public = _reconciler(tmp_path)
    seal(decl, DOMAIN, "A=1\n", public)
    base = asyncio.run(env_edits.read(reconciler, DOMAIN))
    seal(decl, DOMAIN, "A=someone-else\n", public)
    tip = git(decl, "rev-parse", "main")
    with pytest.raises(PinConflict, match="changed on main meanwhile"):
        asyncio.run(env_edits.commit(reconciler, base, "A=2\n", "env", "Ann <ann@example.com>"))
    assert git(decl, "rev-parse", "main") == tip
