"""The daemon reacts to declaration commits through the watcher alone (the poll interval is
set far beyond the test), however the ref moves: a commit in a work tree, a push into a bare
repository, packed refs, `git gc`, and a branch deleted and re-created."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.support import DaemonProcess, Daemons, app_commit, git

DOMAIN = "watch.example.com"


@dataclass
class World(support.World):
    """A work tree (`work`, the usual `decl`) with a bare clone (`bare`) it pushes to; the daemon
    polls once an hour, so only the watcher can make it react within a test."""

    daemon: DaemonProcess | None = None

    @property
    def work(self) -> Path:
        return self.decl

    @property
    def bare(self) -> Path:
        return self.tmp / "sites.git"

    def declare(self, domain: str | None = None, **fields: Any) -> Path:
        return super().declare(domain, keep=10, **fields)

    def start(self, repo: Path) -> None:
        """The daemon on `repo` (the work tree or the bare clone)."""
        self.write_config(repo=repo, interval=3600)
        self.daemon = self.start_daemon()


@pytest.fixture
def world(tmp_path: Path, daemons: Daemons) -> World:
    w = World.create(tmp_path, daemons=daemons, domain=DOMAIN)
    git(tmp_path, "clone", "-q", "--bare", str(w.work), str(w.bare))
    git(w.work, "remote", "add", "origin", str(w.bare))
    return w


def _two_releases(world: World, push: bool) -> tuple[str, str]:
    """Deploy the app twice; the second time via a declaration change (a new script), since the
    poll that would notice a new app commit is an hour away."""
    world.declare()
    if push:
        git(world.work, "push", "-q", "origin", "main")
    world.wait(lambda: world.active() is not None, "first declaration not applied via the watcher")
    first = world.active()
    app_commit(world.app, "v2")
    world.declare(script="echo v2\n")
    if push:
        git(world.work, "push", "-q", "origin", "main")
    world.wait(lambda: world.active() not in (None, first), "second declaration not applied")
    return first, world.active()


def _pin(world: World, release: str, push: bool) -> None:
    world.declare(script="echo v2\n", pin=release)
    if push:
        git(world.work, "push", "-q", "origin", "main")


def test_commits_in_a_work_tree_packed_refs_and_gc(world: World) -> None:
    world.start(world.work)
    first, second = _two_releases(world, push=False)
    _pin(world, first, push=False)
    world.wait(lambda: world.active() == first, "pin commit not applied")
    git(world.work, "pack-refs", "--all")
    assert not (world.work / ".git" / "refs" / "heads" / "main").exists()
    world.declare(script="echo v2\n", pin=second)
    world.wait(lambda: world.active() == second, "commit on a packed ref not applied")
    git(world.work, "gc", "-q", "--prune=now")
    _pin(world, first, push=False)
    world.wait(lambda: world.active() == first, "commit after git gc not applied")


def test_pushes_into_a_bare_repository_and_branch_recreation(world: World) -> None:
    world.start(world.bare)
    first, second = _two_releases(world, push=True)
    _pin(world, first, push=True)
    world.wait(lambda: world.active() == first, "push into the bare repository not applied")
    # Delete the branch, then re-create it pointing at a commit that pins the other release.
    git(world.bare, "update-ref", "-d", "refs/heads/main")
    time.sleep(0.5)
    assert world.active() == first, "a missing branch must change nothing"
    world.declare(script="echo v2\n", pin=second)
    git(world.work, "push", "-q", "origin", "main")
    world.wait(lambda: world.active() == second, "re-created branch not applied")
    assert world.daemon is not None and world.daemon.alive(), "the daemon must survive it all"
