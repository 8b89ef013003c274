"""Files a deploy makes on a server do not take the server's umask: with umask
000 a release, its manifest and .git/config came out 0666. Every remote command now runs under
umask 022, and what may hold secrets is owner-only: deployment.log (it holds `sh -x` traces of
the script, expanded values included) and a dot-file shared entry created empty, like .env.

Threat model: other local users of a server cannot change a release or read its deploy log."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.support import World, git


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_server_umask_of_000_leaves_no_world_writable_file(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    world.declare(script="echo deployed with token=$RECONCILER_COMMIT\n", shared=["storage", ".env"])
    result = world.run_cli_process("reconcile", preexec=lambda: os.umask(0))
    assert result.returncode == 0, result.stdout + result.stderr
    disk = world.on_disk()
    active = disk.active()
    assert active is not None
    release = disk.release(active)
    writable = [str(p) for p in [release, *release.rglob("*")]
                if not p.is_symlink() and _mode(p) & stat.S_IWOTH]
    assert writable == []
    assert _mode(release / "deployment.log") == 0o600
    assert _mode(release / ".git" / "config") & 0o022 == 0
    assert _mode(world.deployments() / "shared" / ".env") == 0o600


@pytest.mark.parametrize(("committed", "server_umask"), [(0o644, 0o022), (0o666, 0o000), (0o755, 0o000)],
                         ids=["0644", "0666-umask-000", "0755-umask-000"])
def test_a_shared_file_seeded_from_the_repository_is_owner_only(tmp_path: Path, committed: int,
                                                                 server_umask: int) -> None:
    """A shared `file` entry seeded from the repository's copy used to keep that
    copy's mode (`cp -a`), so an app that ships `.env` seeded shared/.env 0644, where the
    operators then put the production secrets. Seeding never widens access: a seeded file is
    owner-only, a seeded directory loses group and world write."""
    world = World.create(tmp_path)
    env = world.app / ".env"
    env.write_text("APP_KEY=\nDB_PASSWORD=\n")
    env.chmod(committed)
    (world.app / "storage" / "app").mkdir()
    (world.app / "storage" / "app" / "seed.txt").write_text("seeded\n")
    git(world.app, "add", "-A")
    git(world.app, "commit", "-q", "-m", "ship .env")
    world.declare(shared=["storage", ".env"])
    result = world.run_cli_process("reconcile", preexec=lambda: os.umask(server_umask))
    assert result.returncode == 0, result.stdout + result.stderr
    shared = world.deployments() / "shared"
    assert (shared / ".env").read_text() == "APP_KEY=\nDB_PASSWORD=\n"  # seeded from the repository
    assert _mode(shared / ".env") == (0o700 if committed & 0o100 else 0o600)  # go-rwx: the owner's bits stay
    assert [str(p) for p in [shared / "storage", *(shared / "storage").rglob("*")] if _mode(p) & 0o022] == []
    assert (shared / "storage" / "app" / "seed.txt").read_text() == "seeded\n"
