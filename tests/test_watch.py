"""The daemon reacts to declaration commits through the watcher alone (the poll interval is
set far beyond the test), however the ref moves: a commit in a work tree, a push into a bare
repository, packed refs, `git gc`, and a branch deleted and re-created."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.builders import app_commit, git, make_app_repo, make_decl_repo, write_site

DOMAIN = "watch.example.com"


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.app = make_app_repo(tmp / "app")
        self.work = make_decl_repo(tmp / "work")
        self.bare = tmp / "sites.git"
        git(tmp, "clone", "-q", "--bare", str(self.work), str(self.bare))
        git(self.work, "remote", "add", "origin", str(self.bare))
        self.base = tmp / "srv"
        self.site = {"server": "local", "base_path": str(self.base), "repository": str(self.app), "keep": 10}
        self.link = self.base / DOMAIN
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, repo: Path) -> None:
        config = self.tmp / "reconciler.toml"
        config.write_text(f'repo = "{repo}"\nstate_dir = "{self.tmp / "state"}"\ninterval = 3600\n')
        self.log = (self.tmp / "daemon.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "reconciler", "--config", str(config), "run"],
                                        stderr=self.log)

    def active(self) -> str:
        return os.readlink(self.link).rsplit("/", 1)[-1] if self.link.is_symlink() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.stop()


def _two_releases(world: World, push: bool) -> tuple[str, str]:
    """Deploy the app twice; the second time via a declaration change (a new script), since the
    poll that would notice a new app commit is an hour away."""
    write_site(world.work, DOMAIN, **world.site)
    if push:
        git(world.work, "push", "-q", "origin", "main")
    assert wait_until(lambda: world.active() != ""), "first declaration not applied via the watcher"
    first = world.active()
    app_commit(world.app, "v2")
    write_site(world.work, DOMAIN, **world.site, script="echo v2\n")
    if push:
        git(world.work, "push", "-q", "origin", "main")
    assert wait_until(lambda: world.active() not in ("", first)), "second declaration not applied"
    return first, world.active()


def _pin(world: World, release: str, push: bool) -> None:
    write_site(world.work, DOMAIN, **world.site, script="echo v2\n", pin=release)
    if push:
        git(world.work, "push", "-q", "origin", "main")


def test_commits_in_a_work_tree_packed_refs_and_gc(world: World) -> None:
    world.start(world.work)
    first, second = _two_releases(world, push=False)
    _pin(world, first, push=False)
    assert wait_until(lambda: world.active() == first), "pin commit not applied"
    git(world.work, "pack-refs", "--all")
    assert not (world.work / ".git" / "refs" / "heads" / "main").exists()
    write_site(world.work, DOMAIN, **world.site, script="echo v2\n", pin=second)
    assert wait_until(lambda: world.active() == second), "commit on a packed ref not applied"
    git(world.work, "gc", "-q", "--prune=now")
    _pin(world, first, push=False)
    assert wait_until(lambda: world.active() == first), "commit after git gc not applied"


def test_pushes_into_a_bare_repository_and_branch_recreation(world: World) -> None:
    world.start(world.bare)
    first, second = _two_releases(world, push=True)
    _pin(world, first, push=True)
    assert wait_until(lambda: world.active() == first), "push into the bare repository not applied"
    # Delete the branch, then re-create it pointing at a commit that pins the other release.
    git(world.bare, "update-ref", "-d", "refs/heads/main")
    time.sleep(0.5)
    assert world.active() == first, "a missing branch must change nothing"
    write_site(world.work, DOMAIN, **world.site, script="echo v2\n", pin=second)
    git(world.work, "push", "-q", "origin", "main")
    assert wait_until(lambda: world.active() == second), "re-created branch not applied"
    assert world.process is not None and world.process.poll() is None, "the daemon must survive it all"
