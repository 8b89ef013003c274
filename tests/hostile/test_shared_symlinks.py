"""Shared entries never follow symlinks an app repository ships.

Threat model: an app committer cannot make a deploy touch files outside its release and shared
dir. A committer to an app repository (no `script`, so per the README no way to run code at
deploy time) controls what the clone holds, symlinks included. The shared-link step works on
`<release>/<entry>` and seeds `shared/<entry>` from it, so:

* a parent of an entry inside the release that is a symlink (`public -> /victim` with
  `shared = ["public/uploads"]`) fails the site, with the entry named, before anything is
  removed, copied or linked;
* a symlink shipped AT the entry is never copied into shared/: it is replaced by our link,
  and the shared entry is created empty, as if the repository did not ship it;
* a directory seeded into shared/ keeps no symlink from the repository.

Real git repositories, `server = "local"`, the CLI in this process. Each test fails on the
builder of HEAD dd8111a (before this change), seen by running them against it:
(a) `reconcile` exited 0 with the site Synced; the old step, run alone on the same layout,
    replaced `victim/uploads` by a link to `../../shared/public/uploads` and left
    important.txt in shared/public/uploads/;
(b) `shared/storage` was the repository's symlink to victim2/data;
(c) `shared/storage/evil` was the repository's symlink to the victim.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support import World, git, make_app_repo, neutral_world

DOMAIN = "shop.example.com"
SIBLING = "blog.example.com"
IMPORTANT = "do not touch\n"
SECRET = "APP_KEY=another-site\n"


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root` (links not followed): file contents, 'dir' or '-> target'."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = path.read_text()
    return found


def _commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def _status(world: World) -> dict[str, dict[str, Any]]:
    rc, out, err = world.run_cli("status", "--json")
    assert rc == 0, (out, err)
    return {view["domain"]: view for view in json.loads(out)}


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return neutral_world(tmp_path, monkeypatch)


def test_m3_parent_symlink_fails_the_site_and_touches_nothing_outside(world: World, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "uploads").mkdir(parents=True)
    (victim / "uploads" / "important.txt").write_text(IMPORTANT)
    before = _tree(victim)
    hostile = make_app_repo(tmp_path / "hostile-app")
    for path in (hostile / "public").iterdir():
        path.unlink()
    (hostile / "public").rmdir()
    (hostile / "public").symlink_to(victim)
    _commit_all(hostile, "public is a symlink")
    world.declare(DOMAIN, repository=hostile, script="", shared=["public/uploads"])
    world.declare(SIBLING, script="")  # the same base path, a normal app

    rc, out, err = world.run_cli("reconcile")

    assert rc == 1, (out, err)
    assert f"{DOMAIN}: Failed" in out, out
    assert f"{SIBLING}: Synced/Healthy" in out, out
    assert _tree(victim) == before, "the victim's directory was changed"
    assert (victim / "uploads").is_dir() and not (victim / "uploads").is_symlink()
    shared = world.deployments(DOMAIN) / "shared"
    assert not [p for p in shared.rglob("*") if p.name == "important.txt"], _tree(shared)
    assert not (world.base / DOMAIN).exists() and not (world.base / DOMAIN).is_symlink(), "a failed site went live"
    message = _status(world)[DOMAIN]["message"]
    assert "public/uploads" in message and "symlink" in message, message
    assert world.active(SIBLING) is not None


def test_m3b_entry_shipped_as_symlink_is_not_copied_into_shared(world: World, tmp_path: Path) -> None:
    victim2 = tmp_path / "victim2"
    (victim2 / "data").mkdir(parents=True)
    (victim2 / "data" / ".env").write_text(SECRET)
    before = _tree(victim2)
    app = world.app
    for path in sorted((app / "storage").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (app / "storage").rmdir()
    (app / "storage").symlink_to(victim2 / "data")
    _commit_all(app, "storage is a symlink")
    world.declare(DOMAIN, script="")  # the default shared list: storage, .env, vendor, node_modules

    rc, out, err = world.run_cli("reconcile")

    assert rc == 0, (out, err)
    shared = world.deployments(DOMAIN) / "shared"
    storage = shared / "storage"
    assert not storage.is_symlink(), f"shared/storage -> {os.readlink(storage)}"
    assert storage.is_dir() and not any(storage.iterdir()), _tree(storage)
    release = world.deployments(DOMAIN) / str(world.active(DOMAIN))
    assert os.readlink(release / "storage") == "../shared/storage"
    assert _tree(victim2) == before
    assert not [p for p in shared.rglob("*") if p.is_symlink()], _tree(shared)


def test_a_seeded_directory_keeps_no_symlink_of_the_repository(world: World, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text(IMPORTANT)
    (world.app / "storage" / "evil").symlink_to(victim)
    _commit_all(world.app, "a symlink inside storage/")
    world.declare(DOMAIN, script="", shared=["storage"])

    rc, out, err = world.run_cli("reconcile")

    assert rc == 0, (out, err)
    storage = world.deployments(DOMAIN) / "shared" / "storage"
    assert (storage / "logs" / ".gitkeep").is_file(), "the repository's storage/ still seeds shared/"
    assert not (storage / "evil").is_symlink() and not (storage / "evil").exists(), _tree(storage)
    assert _tree(victim) == {"data.txt": IMPORTANT}
