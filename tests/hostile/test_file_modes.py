"""Files a deploy makes on a server do not take the server's umask (issue 10 item 8): with umask
000 a release, its manifest and .git/config came out 0666. Every remote command now runs under
umask 022, and what may hold secrets is owner-only: deployment.log (it holds `sh -x` traces of
the script, expanded values included) and a dot-file shared entry created empty, like .env.

Threat model: other local users of a server cannot change a release or read its deploy log."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.support import World


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
