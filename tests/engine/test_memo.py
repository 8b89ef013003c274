"""What the look-only commands remember between runs (engine/memo.py): a config key is exactly
what it was derived from, a remembered answer round-trips, an entry written by other code is not
believed, a corrupt or foreign file is a miss (never a crash), and the memo keeps only a bounded
number of configurations and commits, owner-only. Real files in tmp_path."""

from __future__ import annotations

import json
import os
import stat
from datetime import date
from pathlib import Path

import pytest

from reconciler.engine import memo
from reconciler.engine.memo import KEEP_DECLARED, KEEP_SETTINGS, MEMO_DIR, Looks, Memo, settings_key
from reconciler.engine.views import Declared

LOOKS = Looks("/srv/decl", "main", "/var/lib/reconciler", False, "off", "1/2")
SITES = {"a.example.com": Declared("web-1, web-2", "web-1", "06122026-120000", "branch main", None),
         "bad.example.com": Declared("web-3", "", None, None, "pin: not a release name")}


def test_a_settings_key_changes_with_any_value_and_refuses_what_it_cannot_encode() -> None:
    raw = {"repo": Path("/srv/decl"), "interval": 30, "flags": {"allow_local": True}}
    assert settings_key(raw) == settings_key(dict(reversed(list(raw.items()))))
    assert settings_key(raw) != settings_key({**raw, "interval": 31})
    assert settings_key(raw) != settings_key({**raw, "repo": "/srv/decl"}), "a path is not its text"
    assert settings_key({**raw, "since": date(2026, 12, 6)}) is None


def test_remembered_settings_and_declarations_round_trip_owner_only(tmp_path: Path) -> None:
    Memo(tmp_path).remember_settings("k1", LOOKS)
    Memo(tmp_path).remember_declared("c" * 40, False, SITES)
    fresh = Memo(tmp_path)
    assert fresh.looks("k1") == LOOKS and fresh.looks("k2") is None
    assert fresh.declared("c" * 40, False) == SITES
    assert fresh.declared("c" * 40, True) is None, "allow_local is part of what it was derived from"
    assert LOOKS.db_path == Path("/var/lib/reconciler/reconciler.db")
    directory = tmp_path / MEMO_DIR
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {0o600}
    assert not [p for p in directory.iterdir() if p.name.startswith(".")], "no temporary file is left"


def test_an_entry_written_by_other_code_or_broken_is_not_believed(tmp_path: Path) -> None:
    written = Memo(tmp_path)
    written.remember_settings("k1", LOOKS)
    written.remember_declared("c" * 40, False, SITES)
    settings = tmp_path / MEMO_DIR / "settings.json"
    data = json.loads(settings.read_text())
    settings.write_text(json.dumps({**data, "code": "an older release"}))
    assert Memo(tmp_path).looks("k1") is None
    settings.write_text(json.dumps({**data, "accepted": {"k1": {"branch": "main"}}}))
    assert Memo(tmp_path).looks("k1") is None, "fields missing: a miss"
    declared = tmp_path / MEMO_DIR / f"declared-{'c' * 40}-0.json"
    declared.write_text("{not json")
    assert Memo(tmp_path).declared("c" * 40, False) is None


def test_only_the_newest_configurations_and_commits_are_kept(tmp_path: Path) -> None:
    kept = Memo(tmp_path)
    for n in range(KEEP_SETTINGS + 2):
        kept.remember_settings(f"k{n}", LOOKS)
    assert kept.looks("k0") is None and kept.looks("k1") is None
    assert kept.looks("k2") == LOOKS and kept.looks(f"k{KEEP_SETTINGS + 1}") == LOOKS
    for n in range(KEEP_DECLARED + 2):
        name = f"{n:040x}"
        kept.remember_declared(name, False, SITES)
        os.utime(tmp_path / MEMO_DIR / f"declared-{name}-0.json", (1_000_000 + n, 1_000_000 + n))
    assert len(list((tmp_path / MEMO_DIR).glob("declared-*.json"))) == KEEP_DECLARED
    assert kept.declared(f"{0:040x}", False) is None
    assert kept.declared(f"{KEEP_DECLARED + 1:040x}", False) == SITES


def test_a_memo_it_cannot_write_costs_nothing_but_time(tmp_path: Path) -> None:
    blocked = tmp_path / "state"
    blocked.mkdir()
    (blocked / MEMO_DIR).write_text("a file where the directory goes\n")
    unwritable = Memo(blocked)
    unwritable.remember_settings("k1", LOOKS)
    assert unwritable.looks("k1") is None


def test_the_code_fingerprint_changes_with_the_validating_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "package"
    for name in memo._VALIDATING:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"# {name}\n")
    monkeypatch.setattr(memo, "_PACKAGE", package)
    before = memo._code_fingerprint()
    (package / "engine" / "views.py").write_text("# changed\n")
    assert memo._code_fingerprint() != before
    (package / "engine" / "views.py").unlink()
    assert memo._code_fingerprint() not in (before, ""), "a missing module is still a fingerprint"


@pytest.mark.parametrize("module", ["core/declaration_files.py", "core/layers.py"])
def test_the_code_fingerprint_covers_the_parser_and_the_layering_of_declarations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """What a site file means is also decided by its parser and by how defaults and templates
    layer under it: after an upgrade of either, no remembered summary is believed."""
    package = tmp_path / "package"
    for name in {*memo._VALIDATING, module}:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"# {name}\n")
    monkeypatch.setattr(memo, "_PACKAGE", package)
    before = memo._code_fingerprint()
    (package / module).write_text("# changed\n")
    assert memo._code_fingerprint() != before
