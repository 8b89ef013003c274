"""The operator's look-only commands start at once: `status`, `history`, `logs`
and `--help` load none of the heavy libraries, checked by which modules a real process imported
(never by wall time; bench/cli.py times them). And what they skip changes nothing they print:
the remembered settings and declarations (engine.memo) give the same answer as the long way, a
changed config or a new declarations commit is seen at once, and the plain-sqlite3 reader
returns Store's rows. Real git repositories, a real pass on the local transport, real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.engine.branch_tip import read_tip
from reconciler.engine.memo import MEMO_DIR
from reconciler.engine.state_reader import StaleSchema, StateReader
from reconciler.engine.store import Store
from tests.support import Daemons, git
from tests.support.world import World, neutral_world

# Each costs tens of milliseconds to import; a look-only command needs none of them.
HEAVY = ("asyncssh", "pygit2", "pydantic", "pydantic_core", "sqlite_utils", "apscheduler", "watchfiles", "aiohttp",
         "apprise", "asyncio")
ROOT = Path(__file__).resolve().parents[2]

# Runs the real entry point in a fresh interpreter, then writes the names of every module it loaded.
PROBE = """
import json, sys
from reconciler.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:  # --help
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """A site deployed twice (two history rows, a local log) by real passes."""
    world = neutral_world(tmp_path, monkeypatch)
    world.declare(script="echo built\n")
    assert world.run_cli("reconcile").rc == 0
    git(world.app, "commit", "-q", "--allow-empty", "-m", "v2")
    assert world.run_cli("reconcile").rc == 0
    return world


def _run(world: World, *args: str) -> tuple[int, str, set[str]]:
    """`reconciler --config CFG ARGS` in a fresh interpreter: exit status, stdout, loaded modules."""
    report = world.tmp / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(report), "--config", str(world.config), *args],
                          cwd=world.tmp / "cwd", env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    return data["code"], done.stdout, set(data["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("status", "shop.example.com"),
                                  ("history", "shop.example.com"), ("history", "shop.example.com", "--json"),
                                  ("logs", "shop.example.com"), ("--help",), ("status", "--help")])
def test_look_only_commands_import_no_heavy_library(world: World, args: tuple[str, ...]) -> None:
    first = _run(world, *args)   # may take the long way once (and remember)
    code, out, modules = _run(world, *args)
    assert _heavy(modules) == [], f"reconciler {' '.join(args)} imported {_heavy(modules)}"
    assert (code, out) == first[:2]  # the memo's answer is the long way's answer


def test_the_remembered_answer_is_the_long_way_s(world: World) -> None:
    code, cold, modules = _run(world, "status", "--json")
    assert "pydantic" in modules and "pygit2" in modules  # nothing remembered yet: validated, read with pygit2
    assert (world.state / MEMO_DIR / "settings.json").is_file()
    code2, warm, modules2 = _run(world, "status", "--json")
    assert (code, json.loads(cold)) == (code2, json.loads(warm))
    assert json.loads(warm)[0]["sync"] == "Synced"
    assert _heavy(modules2) == []


def test_the_long_way_loads_only_the_validators_and_git(world: World) -> None:
    """With nothing remembered, status validates the config and the commit (pydantic) and reads
    the commit (pygit2), and loads nothing else heavy: not the engine's pass (asyncio) nor
    sqlite-utils while the state database is current."""
    shutil.rmtree(world.state / MEMO_DIR, ignore_errors=True)
    _, _, modules = _run(world, "status", "--json")
    assert {m.split(".")[0] for m in _heavy(modules)} == {"pydantic", "pydantic_core", "pygit2"}
    assert "reconciler.engine.converge" not in modules


def test_a_new_declarations_commit_is_seen_at_once(world: World) -> None:
    _run(world, "status", "--json")
    world.declare("other.example.com", script="echo other\n")  # a new commit: a new tip
    _, out, _ = _run(world, "status", "--json")
    views = {v["domain"]: v for v in json.loads(out)}
    assert set(views) == {"shop.example.com", "other.example.com"}
    assert views["other.example.com"]["message"] == "not reconciled yet"
    # And an invalid one says why, from the memo as well as the long way.
    world.declare("bad.example.com", keep=0)
    for _ in range(2):
        views = {v["domain"]: v for v in json.loads(_run(world, "status", "--json")[1])}
        assert views["bad.example.com"]["sync"] == "Invalid"
        assert "keep" in views["bad.example.com"]["message"]


def test_a_changed_config_is_validated_again(world: World) -> None:
    _run(world, "status")
    _run(world, "status")  # remembered
    world.config.write_text(world.config.read_text() + "concurrency = 0\n")
    report = world.tmp / "modules.json"
    done = subprocess.run([sys.executable, "-c", PROBE, str(report), "--config", str(world.config), "status"],
                          cwd=world.tmp / "cwd", env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert json.loads(report.read_text())["code"] == 2
    assert "concurrency" in done.stderr


def test_a_memo_from_other_code_is_not_believed(world: World) -> None:
    _run(world, "status", "--json")
    for file in (world.state / MEMO_DIR).iterdir():
        data = json.loads(file.read_text())
        file.write_text(json.dumps({**data, "code": "an older reconciler"}))
    _, _, modules = _run(world, "status", "--json")
    assert "pydantic" in modules  # validated again


def test_the_sqlite3_reader_returns_the_store_s_rows(world: World) -> None:
    domain = world.domain
    store, reader = Store(world.state / "reconciler.db"), StateReader(world.state / "reconciler.db")
    try:
        assert len(store.deployments(domain)) == 2
        for method in ("site", "site_servers", "activations", "deployments"):
            assert getattr(reader, method)(domain) == getattr(store, method)(domain), method
        assert reader.sites() == store.sites()
        assert reader.observations() == store.observations()
        first = store.deployments(domain)[0]["id"]
        assert reader.deployment(first) == store.deployment(first)
    finally:
        store.close()
        reader.close()


def test_an_older_database_is_read_through_the_store(world: World) -> None:
    db = world.state / "reconciler.db"
    with pytest.raises(sqlite3.OperationalError):
        StateReader(world.tmp / "nothing-here.db")  # mode=rw: never created
    assert not (world.tmp / "nothing-here.db").exists()
    store = Store(db)
    store.db.execute("delete from _sqlite_migrations where name = 'm010_site_servers'")
    store.db.execute("drop table site_servers")
    store.close()
    with pytest.raises(StaleSchema):
        StateReader(db)
    assert world.run_cli("status").rc == 0  # the Store migrates it; status answers as before
    StateReader(db).close()


def test_branch_tip_reads_loose_packed_and_linked_work_tree_refs(tmp_path: Path, world: World) -> None:
    tip = world.tip()
    assert read_tip(world.decl, "main") == tip                     # a loose ref in a work tree's .git/
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(world.decl), str(bare))
    git(bare, "pack-refs", "--all")
    assert not (bare / "refs" / "heads" / "main").exists()
    assert read_tip(bare, "main") == tip                           # packed-refs of a bare repository
    linked = tmp_path / "linked"
    git(world.decl, "worktree", "add", "-q", "-b", "side", str(linked))
    git(linked, "commit", "-q", "--allow-empty", "-m", "on side")
    assert read_tip(linked, "side") == git(linked, "rev-parse", "HEAD")  # .git file + commondir
    assert read_tip(linked, "main") == tip
    assert read_tip(world.decl, "nope") is None
    assert read_tip(world.decl, "../../HEAD") is None
    assert read_tip(world.decl / "sites.d", "main") is None        # never a parent's repository


def test_the_memo_fingerprints_code_that_exists() -> None:
    """Every module the memo's fingerprint names is there (a rename must update the list)."""
    from reconciler.engine import memo

    package = Path(memo.__file__).resolve().parent.parent
    assert [name for name in memo._VALIDATING if not (package / name).is_file()] == []


def test_the_daemon_remembers_each_commit_it_applies_for_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               daemons: Daemons) -> None:
    """The first `status` after a new declarations commit starts at once too: the daemon, which
    has just parsed that commit, writes what status shows of it (engine/memo.py)."""
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    world = World.create(tmp_path, daemons=daemons, interval=3600)
    world.declare(script="echo built\n")
    world.start_daemon()
    world.wait(lambda: world.active() is not None, "the first deploy")
    _run(world, "status")  # the configuration is validated once (and remembered)
    world.declare("other.example.com", script="echo other\n")  # a commit the daemon applies
    memo = world.state / MEMO_DIR
    world.wait(lambda: any(p.name.startswith(f"declared-{git(world.decl, 'rev-parse', 'HEAD')}")
                           for p in memo.glob("declared-*.json")), "the daemon to remember the commit")
    _code, out, modules = _run(world, "status", "--json")
    assert _heavy(modules) == [], f"the first status after the commit imported {_heavy(modules)}"
    assert {v["domain"] for v in json.loads(out)} == {"shop.example.com", "other.example.com"}
