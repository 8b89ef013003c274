"""The copy_from_previous step, run by /bin/sh here: each entry copied from the live release into
the new one as files of its own (never hard links), with hostile names and paths; what it will
not follow (symlinks an app repository could ship) and what it leaves to the script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from reconciler.core.layout import SitePaths
from reconciler.remote.protocol import copying, seam

DOMAIN = "shop.example.com"
LIVE, NEW = "05122026-100000", "06122026-100000"
ODD_ENTRIES = ["vendor", "a b/c", "$(touch PWNED)", "it's", "x;touch PWNED"]


def _run(command: seam.Command, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(seam.local_argv(command.text), input=command.stdin, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def _copy_world(tmp_path: Path) -> SitePaths:
    """A site with a live release and a new, empty one (as cloned: only its log)."""
    paths = SitePaths(str(tmp_path / "srv $(touch PWNED) 'q'"), DOMAIN)
    for name in (LIVE, NEW):
        Path(paths.release(name)).mkdir(parents=True)
        Path(paths.log(name)).write_text("==> clone\n")
    Path(paths.shared).mkdir()
    return paths


def _copied(tmp_path: Path, paths: SitePaths, entries: list[str]) -> str:
    """Run the copy; returns the new release's log."""
    done = _run(copying.copy_previous(paths, NEW, LIVE, entries), tmp_path)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert not list(tmp_path.rglob("PWNED")), "a value ran as code"
    return Path(paths.log(NEW)).read_text()


def test_copy_gives_the_new_release_its_own_files_never_the_live_ones(tmp_path: Path) -> None:
    """Each entry arrives as a copy with its symlinks kept as links; a file of the copy written in
    place (as composer rewrites its autoloader, O_TRUNC on the same inode) leaves the live release
    as it was: hard links would have changed it too."""
    paths = _copy_world(tmp_path)
    live, new = Path(paths.release(LIVE)), Path(paths.release(NEW))
    for entry in ODD_ENTRIES:
        (live / entry / "bin").mkdir(parents=True)
        (live / entry / "autoload.php").write_text("live\n")
        (live / entry / "bin" / "tool").symlink_to("../autoload.php")
    log = _copied(tmp_path, paths, ODD_ENTRIES)
    for entry in ODD_ENTRIES:
        copy = new / entry / "autoload.php"
        assert copy.read_text() == "live\n" and not (new / entry).is_symlink(), entry
        assert copy.stat().st_ino != (live / entry / "autoload.php").stat().st_ino, "a hard link, not a copy"
        assert os.readlink(new / entry / "bin" / "tool") == "../autoload.php"
        with copy.open("r+") as file:  # in place, like file_put_contents
            file.write("new!\n")
        assert (live / entry / "autoload.php").read_text() == "live\n", entry
        assert f"==> copy_from_previous: {entry} copied from the live release" in log


def test_copy_takes_a_shared_entry_the_live_release_links_to(tmp_path: Path) -> None:
    """A live release built while vendor was shared links to shared/vendor: the new release gets a
    copy of that (a directory of its own), so the first build after the change is fast too."""
    paths = _copy_world(tmp_path)
    (Path(paths.shared) / "vendor").mkdir()
    (Path(paths.shared) / "vendor" / "autoload.php").write_text("shared\n")
    (Path(paths.release(LIVE)) / "vendor").symlink_to("../shared/vendor")
    log = _copied(tmp_path, paths, ["vendor"])
    copy = Path(paths.release(NEW)) / "vendor"
    assert copy.is_dir() and not copy.is_symlink() and (copy / "autoload.php").read_text() == "shared\n"
    assert "vendor copied from shared/" in log


def test_copy_follows_no_other_symlink_and_keeps_what_the_repository_ships(tmp_path: Path) -> None:
    """Not copied, each with a line in the log: a live entry that is a symlink elsewhere, one
    under a symlinked directory of the live release, one that is not a directory, one the new
    release already has from the repository (kept as cloned)."""
    paths = _copy_world(tmp_path)
    live, new = Path(paths.release(LIVE)), Path(paths.release(NEW))
    secret = tmp_path / "secret"
    (secret / "deps").mkdir(parents=True)
    (live / "vendor").symlink_to(secret)
    (live / "front").symlink_to(secret)
    (live / "file").write_text("x")
    (live / "shipped").mkdir()
    (live / "shipped" / "old").write_text("old")
    (new / "shipped").mkdir()
    (new / "shipped" / "mine").write_text("mine")
    log = _copied(tmp_path, paths, ["vendor", "front/deps", "file", "shipped"])
    assert sorted(p.name for p in new.iterdir()) == ["deployment.log", "shipped"]
    assert sorted(p.name for p in (new / "shipped").iterdir()) == ["mine"]
    assert "vendor not copied: a symlink in the live release" in log
    assert "front/deps not copied: front is a symlink in the live release" in log
    assert "file not copied: not a directory in the live release" in log
    assert "shipped is in the repository: kept as cloned" in log


def test_copy_without_a_live_release_copies_nothing(tmp_path: Path) -> None:
    paths = _copy_world(tmp_path)
    (Path(paths.release(LIVE)) / "vendor").mkdir()
    done = _run(copying.copy_previous(paths, NEW, None, ["vendor"]), tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (Path(paths.release(NEW)) / "vendor").exists()
    assert "vendor not copied: no live release (the script builds it)" in Path(paths.log(NEW)).read_text()


def test_copy_refuses_a_symlinked_directory_in_the_new_release(tmp_path: Path) -> None:
    """The app repository ships `app -> elsewhere`: copying app/vendor would write outside the
    release; the step fails with the entry named and writes nothing there."""
    paths = _copy_world(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (Path(paths.release(LIVE)) / "app" / "vendor").mkdir(parents=True)
    (Path(paths.release(NEW)) / "app").symlink_to(elsewhere)
    done = _run(copying.copy_previous(paths, NEW, LIVE, ["app/vendor"]), tmp_path)
    assert done.returncode != 0 and "app/vendor" in done.stderr and "symlink" in done.stderr, done
    assert list(elsewhere.iterdir()) == []


