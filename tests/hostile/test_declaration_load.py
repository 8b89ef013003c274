"""Declarations that are large or many cannot stall the daemon or a pass: the daemon parses off
its event loop, and one commit's sites.d/ is bounded in file count and total size; past a bound
the commit is refused as a whole, nothing changes.

Threat model: a declarations committer cannot make the reconciler unresponsive."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from reconciler.config import Settings
from reconciler.core.layers import Layers
from reconciler.engine import source
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from reconciler.errors import DeclarationError
from tests.support import git, make_decl_repo, write_site

SITE = 'server = "local"\nrepository = "/srv/app.git"\n'


def _decl_with(tmp_path: Path, count: int) -> Path:
    decl = make_decl_repo(tmp_path / "decl")
    for n in range(count):
        write_site(decl, f"s{n}.example.com", commit=False, raw=SITE)
    git(decl, "add", "-A")
    git(decl, "commit", "-qm", f"{count} sites")
    return decl


def test_too_many_files_refuse_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decl = _decl_with(tmp_path, 6)
    monkeypatch.setattr(source, "MAX_FILES", 5)
    with pytest.raises(DeclarationError, match="more than 5 files"):
        source.load(decl, "main")
    with pytest.raises(DeclarationError, match="more than 5 files"):
        source.load_directory(decl)
    monkeypatch.setattr(source, "MAX_FILES", 6)
    assert len(source.load(decl, "main").sites) == 6


def test_too_many_bytes_refuse_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decl = _decl_with(tmp_path, 3)
    monkeypatch.setattr(source, "MAX_TOTAL_BYTES", 2 * len(SITE))
    with pytest.raises(DeclarationError, match="bytes; not applied"):
        source.load(decl, "main")


def test_the_daemon_parses_off_its_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decl = _decl_with(tmp_path, 3)
    settings = Settings(repo=decl, state_dir=tmp_path / "state", allow_local=True)
    parsed_on: list[threading.Thread] = []
    real = source.load_commit

    def recording(repo: str | Path, commit: str, cache: object = None) -> object:
        parsed_on.append(threading.current_thread())
        return real(repo, commit, cache)  # type: ignore[arg-type]

    monkeypatch.setattr(source, "load_commit", recording)

    async def main() -> int:
        reconciler = Reconciler(settings, Store(settings.db_path))
        try:
            first = await reconciler.load_async()
            again = await reconciler.load_async()  # same commit: parsed once
            return len(first.sites) + len(again.sites)
        finally:
            await reconciler.close()
            reconciler.store.close()

    assert asyncio.run(main()) == 6
    assert len(parsed_on) == 1
    assert parsed_on[0] is not threading.main_thread()


def test_a_commit_that_changes_one_file_parses_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, every commit, a rollback pin included, re-parsed every file
    before it applied (about 65 us a file: a third of a second at 5,000 sites, a minute at the
    size bound). Now the last commit's results are reused by blob: the pin parses its one file,
    and the result is exactly what a fresh parse gives (bounds included)."""
    decl = _decl_with(tmp_path, 5)
    first = git(decl, "rev-parse", "HEAD")
    parsed: list[str] = []
    real = source.parse_layered

    def counting(filename: str, data: bytes | None, layers: Layers) -> object:
        parsed.append(filename)
        return real(filename, data, layers)

    monkeypatch.setattr(source, "parse_layered", counting)
    cache = source.BlobCache()
    assert len(source.load_commit(decl, first, cache).sites) == 5 and len(parsed) == 5
    write_site(decl, "s3.example.com", raw=SITE + 'pin = "01012026-000000"\n')
    write_site(decl, "bad.example.com", raw="server = 1\n")
    parsed.clear()
    tip = git(decl, "rev-parse", "HEAD")
    cached = source.load_commit(decl, tip, cache)
    assert sorted(parsed) == ["sites.d/bad.example.com.toml", "sites.d/s3.example.com.toml"]
    assert cached == source.load_commit(decl, tip)  # exactly what a fresh parse gives
    assert cached.sites["s3.example.com"].pin == "01012026-000000" and "bad.example.com" in cached.invalid
    # Going back to the first commit parses only what differs from the last one loaded.
    parsed.clear()
    back = source.load_commit(decl, first, cache)
    assert parsed == ["sites.d/s3.example.com.toml"]
    assert back == source.load_commit(decl, first)
    # The bounds still hold for files that were not parsed again.
    monkeypatch.setattr(source, "MAX_TOTAL_BYTES", 2 * len(SITE))
    with pytest.raises(DeclarationError, match="bytes; not applied"):
        source.load_commit(decl, tip, cache)
