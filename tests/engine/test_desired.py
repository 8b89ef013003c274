"""Choosing desired state (engine/desired.py): the branch tip's declarations, each commit parsed
once, local sites refused unless the settings allow them (the parsed copy kept whole), the sites
of other shards set aside with why, and the operator's trust override refused where there is no
trust to override. Real git repositories and a real state database; no server is asked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine import desired as desired_module
from reconciler.engine.desired import DesiredState
from reconciler.engine.store import Store
from reconciler.engine.workbench import Workbench
from reconciler.errors import ConfigError
from tests.support import git, make_decl_repo, settings_for, write_site
from tests.support.recording import RecordingPool

SITE = {"base_path": "/srv", "repository": "git@example.com:acme/shop.git"}


@pytest.fixture
def decl(tmp_path: Path) -> Path:
    repo = make_decl_repo(tmp_path / "decl")
    for n in range(6):
        write_site(repo, f"s{n}.example.com", server=f"web-{n}", **SITE)
    write_site(repo, "here.example.com", server="local", **SITE)
    return repo


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[Store]]:
    stores: list[Store] = []
    yield stores
    for store in stores:
        store.close()


def _desired(decl: Path, tmp_path: Path, opened: list[Store], **settings: Any) -> DesiredState:
    config = settings_for(decl, tmp_path / "state", **settings)
    store = Store(config.db_path)
    opened.append(store)
    return DesiredState(Workbench(config, store, RecordingPool({})))  # type: ignore[arg-type]


def test_the_tip_is_loaded_and_each_commit_parsed_once(decl: Path, tmp_path: Path, opened: list[Store],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = desired_module.source.load_commit

    def counting(repo: Any, commit: str, cache: Any = None) -> Any:
        parsed.append(commit)
        return real(repo, commit, cache)

    monkeypatch.setattr(desired_module.source, "load_commit", counting)
    desired = _desired(decl, tmp_path, opened)
    first = desired.load()
    assert first.commit == git(decl, "rev-parse", "main") and len(first.sites) == 7
    assert desired.load() == first and asyncio.run(desired.load_async()) == first
    assert parsed == [first.commit]
    write_site(decl, "new.example.com", server="web-9", **SITE)
    assert "new.example.com" in desired.load().sites and len(parsed) == 2


def test_local_sites_are_invalid_unless_allowed_and_the_parse_stays_whole(decl: Path, tmp_path: Path,
                                                                         opened: list[Store]) -> None:
    refused = _desired(decl, tmp_path, opened, allow_local=False)
    decls = refused.load()
    assert "here.example.com" not in decls.sites and "here.example.com" in decls.invalid
    assert "here.example.com" in refused.load().invalid, "a second load (from the cache) refuses it again"
    allowed = _desired(decl, tmp_path, opened, allow_local=True)
    assert "here.example.com" in allowed.load().sites


def test_shards_split_the_sites_between_them_and_say_why(decl: Path, tmp_path: Path, opened: list[Store]) -> None:
    shares = [_desired(decl, tmp_path, opened, shard=f"{n}/2") for n in (1, 2)]
    owned = [share.owned(share.load()) for share in shares]
    mine, theirs = set(owned[0].sites) | set(owned[0].invalid), set(owned[1].sites) | set(owned[1].invalid)
    assert mine and theirs and not mine & theirs
    assert mine | theirs == set(shares[0].load().sites)
    assert set(shares[0].skipped) == theirs and all(shares[0].skipped.values())
    whole = _desired(decl, tmp_path, opened)
    assert set(whole.owned(whole.load()).sites) == mine | theirs and whole.skipped == {}


def test_accept_is_refused_when_no_signature_is_required(decl: Path, tmp_path: Path, opened: list[Store]) -> None:
    desired = _desired(decl, tmp_path, opened)
    with pytest.raises(ConfigError, match="nothing to accept"):
        desired.accept(None, "alice")
    assert desired.bench.store.meta(desired_module.LAST_VERIFIED) is None


def test_a_local_declarations_repository_has_no_host_to_fetch(decl: Path, tmp_path: Path,
                                                             opened: list[Store]) -> None:
    desired = _desired(decl, tmp_path, opened)
    assert asyncio.run(desired.refresh_upstream()) is True
    assert desired.fetch_problem == "" and desired.load().notice == ""
