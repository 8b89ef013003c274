"""Per-release dependencies: with `copy_from_previous = ["vendor"]` each release builds on a copy
of the live release's vendor/ (its script finds the old files there) and keeps its own, on every
server of the site; rolling back then runs the old code with its own old vendor/.

The build script writes vendor/ the way composer and npm do, in place: `>` truncates the same
inode (composer's autoloader), `>>` appends. Were vendor/ shared, or hard-linked between
releases, release 2's build would rewrite release 1's files and the rollback would run old code
against new dependencies."""

from __future__ import annotations

import pytest

from tests.support.fleet import Fleet

pytestmark = pytest.mark.ssh

# Composer-like: keeps what it finds (the copy), rewrites the version file in place, appends a line.
SCRIPT = ("mkdir -p vendor\n"
          "{ tr -dc v0-9 < public/index.php; echo; } > vendor/version\n"
          "cat vendor/version >> vendor/installed\n")


def _vendor(fleet: Fleet, release: str, name: str) -> list[list[str]]:
    """vendor/NAME of `release`, on each server: its lines."""
    files = [fleet.site(server).release(release) / "vendor" / name for server in fleet.servers]
    return [file.read_text().splitlines() for file in files]


def test_a_rollback_runs_the_old_release_with_its_own_vendor(fleet: Fleet) -> None:
    fleet.declare(script=SCRIPT, copy_from_previous=["vendor"])
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    first = fleet.live_release()
    for server in fleet.servers:
        vendor = fleet.site(server).release(first) / "vendor"
        assert vendor.is_dir() and not vendor.is_symlink(), "vendor/ is the release's own, not a shared link"
        assert not (fleet.site(server).deployments / "shared" / "vendor").exists()
    assert _vendor(fleet, first, "version") == [["v1"]] * len(fleet.servers)

    fleet.commit("v2")
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    second = fleet.live_release()
    assert second != first
    # Built on a copy of the live vendor/ (the script found release 1's files), on every server.
    assert _vendor(fleet, second, "installed") == [["v1", "v2"]] * len(fleet.servers)
    assert _vendor(fleet, second, "version") == [["v2"]] * len(fleet.servers)
    # ... and release 1 was never touched by release 2's build.
    assert _vendor(fleet, first, "installed") == [["v1"]] * len(fleet.servers)
    assert _vendor(fleet, first, "version") == [["v1"]] * len(fleet.servers)

    rc, out, err = fleet.cli("rollback", fleet.domain, first)
    assert rc == 0, (out, err)
    assert fleet.live() == [first] * len(fleet.servers)
    for server in fleet.servers:
        live_vendor = fleet.site(server).link / "vendor"
        assert (live_vendor / "version").read_text() == "v1\n", server
        assert (live_vendor / "installed").read_text() == "v1\n", server
