"""SPEC section 3: the site symlink is replaced only by an atomic rename, so at no instant does
`{base}/{domain}` (and the document root `{base}/{domain}/public`) fail to resolve.

The real `site_steps.switch` command runs 1000 times under /bin/sh, alternating between two real releases,
while ANOTHER PROCESS resolves `{base}/{domain}/public` in a tight loop. A control run with a
non-atomic switch (unlink, then symlink) proves the resolver does catch a missing link.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.core.layout import SitePaths
from reconciler.remote.protocol import seam, site_steps
from tests.support.repos import git, make_app_repo

DOMAIN = "shop.example.com"
RELEASES = ("01082025-091245", "31072025-143022")
SWITCHES = 1000
BATCH = 20
RESOLVER_DEADLINE = 90.0  # seconds: the resolver stops by itself even if the test dies

# Resolves PATH with os.stat until STOP exists (checked every 100 resolutions) or the deadline.
RESOLVER = textwrap.dedent("""
    import json, os, sys, time
    path, stop, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
    ok = failed = 0
    seen = {}
    errors = []
    print("ready", flush=True)
    while True:
        for _ in range(100):
            try:
                inode = os.stat(path).st_ino
            except OSError as exc:
                failed += 1
                if len(errors) < 5:
                    errors.append(repr(exc))
            else:
                ok += 1
                seen[inode] = seen.get(inode, 0) + 1
        if os.path.exists(stop) or time.monotonic() > deadline:
            break
    print(json.dumps({"ok": ok, "failed": failed, "seen": {str(k): v for k, v in seen.items()},
                      "errors": errors}), flush=True)
""")


def switch_command(paths: SitePaths, release: str) -> str:
    command = site_steps.switch(paths, release)
    assert command.stdin is None  # the whole switch is in the command text
    return command.text


def _make_releases(base: Path) -> SitePaths:
    for name in RELEASES:
        public = base / "deployments" / DOMAIN / name / "public"
        public.mkdir(parents=True)
        (public / "index.php").write_text(f"<?php echo '{name}';\n")
    return SitePaths(str(base), DOMAIN)


def _sh(command: str) -> None:
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (result.returncode, result.stderr, command)


def _race(tmp_path: Path, base: Path, switcher: Callable[[], None]) -> dict[str, Any]:
    """Run `switcher` while a separate process resolves {base}/{domain}/public; return its counts."""
    stop = tmp_path / "stop"
    resolver = subprocess.Popen(
        [sys.executable, "-c", RESOLVER, str(base / DOMAIN / "public"), str(stop), str(RESOLVER_DEADLINE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert resolver.stdout is not None
        assert resolver.stdout.readline().strip() == "ready"
        switcher()
    finally:
        stop.touch()
        out, _ = resolver.communicate(timeout=RESOLVER_DEADLINE + 30)
    assert resolver.returncode == 0, out
    report: dict[str, Any] = json.loads(out)
    return report


def test_switch_is_atomic_under_concurrent_resolution(tmp_path: Path) -> None:
    base = tmp_path / "srv"
    paths = _make_releases(base)
    _sh(switch_command(paths, RELEASES[0]))  # the site link first exists here
    inodes = {os.stat(base / "deployments" / DOMAIN / name / "public").st_ino: name for name in RELEASES}

    def switch_many() -> None:
        # Batches of real switch commands per /bin/sh (each one as apply.switch sends it).
        commands = [switch_command(paths, RELEASES[(n + 1) % 2]) for n in range(SWITCHES)]
        for start in range(0, SWITCHES, BATCH):
            _sh("".join(commands[start : start + BATCH]))

    report = _race(tmp_path, base, switch_many)

    assert report["failed"] == 0, f"the document root failed to resolve: {report}"
    assert report["ok"] > SWITCHES, f"the resolver barely ran: {report}"
    # The resolver saw both releases, so it really ran while the link flipped back and forth.
    assert {inodes[int(k)] for k in report["seen"]} == set(RELEASES), report
    # 1000 switches end on RELEASES[0]; the link stays relative; no temporary link is left behind.
    assert os.readlink(base / DOMAIN) == f"deployments/{DOMAIN}/{RELEASES[SWITCHES % 2]}"
    assert sorted(p.name for p in base.iterdir()) == ["deployments", DOMAIN]


def test_switch_command_refuses_a_missing_release_and_keeps_the_link(tmp_path: Path) -> None:
    base = tmp_path / "srv"
    paths = _make_releases(base)
    _sh(switch_command(paths, RELEASES[1]))
    result = subprocess.run(
        ["/bin/sh", "-c", switch_command(paths, "02082025-000000")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert os.readlink(base / DOMAIN) == f"deployments/{DOMAIN}/{RELEASES[1]}"
    assert sorted(p.name for p in base.iterdir()) == ["deployments", DOMAIN]


def test_resolver_detects_a_non_atomic_switch(tmp_path: Path) -> None:
    """Control: unlink-then-symlink (what `ln -sfn` does on many systems) leaves a window the
    resolver catches, so a zero in the test above means something."""
    base = tmp_path / "srv"
    _make_releases(base)
    link = base / DOMAIN
    targets = [f"deployments/{DOMAIN}/{name}" for name in RELEASES]
    os.symlink(targets[0], link)
    loop = (
        f"i=0; while [ $i -lt 100 ]; do "
        f"rm -f -- '{link}'; ln -s -- '{targets[1]}' '{link}'; "
        f"rm -f -- '{link}'; ln -s -- '{targets[0]}' '{link}'; i=$((i+1)); done"
    )
    report = _race(tmp_path, base, lambda: _sh(loop))
    assert report["failed"] > 0, report


def _switch_status(paths: SitePaths, release: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", switch_command(paths, release)], capture_output=True, text=True,
                          timeout=30)


def test_switch_exit_codes_are_named(tmp_path: Path) -> None:
    """The codes Python reads (apply.switch) are the ones the command exits with."""
    base = tmp_path / "srv"
    paths = _make_releases(base)
    assert _switch_status(paths, "02082025-000000").returncode == seam.EXIT_RELEASE_MISSING
    (base / DOMAIN).mkdir()  # a real directory where the site link belongs
    (base / DOMAIN / "keep.txt").write_text("operator data\n")
    result = _switch_status(paths, RELEASES[0])
    assert result.returncode == seam.EXIT_NOT_A_SYMLINK, result
    assert "not a symlink" in result.stderr
    assert (base / DOMAIN / "keep.txt").read_text() == "operator data\n"
    (base / DOMAIN / "keep.txt").unlink()
    (base / DOMAIN).rmdir()
    (base / DOMAIN).write_text("a file\n")  # a regular file is refused the same way
    assert _switch_status(paths, RELEASES[0]).returncode == seam.EXIT_NOT_A_SYMLINK
    assert (base / DOMAIN).read_text() == "a file\n"
    assert sorted(p.name for p in base.iterdir()) == ["deployments", DOMAIN]  # no temporary link left


def test_switch_with_a_hostile_base_path(tmp_path: Path) -> None:
    base = tmp_path / "b a$(touch PWNED)'s `touch PWNED` \"q\";x|y&z -n"
    paths = _make_releases(base)
    _sh(switch_command(paths, RELEASES[0]))
    _sh(switch_command(paths, RELEASES[1]))
    assert os.readlink(base / DOMAIN) == f"deployments/{DOMAIN}/{RELEASES[1]}"
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()


def test_write_env_replaces_shared_env_atomically_with_mode_0600_from_stdin(tmp_path: Path) -> None:
    """The content travels on stdin, never in the command text; the file ends 0600 with exactly
    that content, no temp file is left, and an old file (or a stale link) is replaced whole."""
    import stat
    paths = SitePaths(str(tmp_path), "shop.example.com")
    secret = "DB_PASSWORD=it's \"quoted\" $HOME\n"
    command = site_steps.write_env(paths, secret)
    assert "DB_PASSWORD" not in command.text and command.stdin == secret
    for _ in range(2):  # first into a missing shared/, then over the file written before
        done = subprocess.run(seam.local_argv(command.text), input=command.stdin, text=True, capture_output=True)
        assert done.returncode == 0, done.stderr
        target = Path(paths.shared) / ".env"
        assert target.read_text() == secret and stat.S_IMODE(target.stat().st_mode) == 0o600
        assert sorted(p.name for p in Path(paths.shared).iterdir()) == [".env"]
    target.unlink()
    target.symlink_to("/nonexistent")
    done = subprocess.run(seam.local_argv(command.text), input=command.stdin, text=True, capture_output=True)
    assert done.returncode == 0 and not target.is_symlink() and target.read_text() == secret


# --- the build command with copy_from_previous ---------------------------------------------------

LIVE = "05122026-100000"


def _run(command: seam.Command, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(seam.local_argv(command.text), input=command.stdin, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_the_build_command_copies_after_linking_and_names_a_failed_copy(tmp_path: Path) -> None:
    """build_release clones, links shared entries, then copies: a live vendor/ arrives in the
    new release; a refused copy exits EXIT_COPY (the build says which step failed)."""
    paths = SitePaths(str(tmp_path / "srv $(touch PWNED) 'q'"), DOMAIN)
    Path(paths.release(LIVE)).mkdir(parents=True)
    app = make_app_repo(tmp_path / "app")
    (app / "app").symlink_to("/tmp")
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", "a symlink")
    commit = git(app, "rev-parse", "HEAD")
    (Path(paths.release(LIVE)) / "vendor").mkdir()
    (Path(paths.release(LIVE)) / "vendor" / "autoload.php").write_text("live\n")
    (Path(paths.release(LIVE)) / "app" / "vendor").mkdir(parents=True)
    fresh = "07122026-100000"
    claim = site_steps.claim_release(paths, fresh, "{}", "==> x", None, ["storage"])
    done = _run(site_steps.build_release(paths, str(app), "main", commit, fresh, claim, LIVE, ["vendor"]), tmp_path)
    assert done.returncode == 0, done.stderr
    release = Path(paths.release(fresh))
    assert (release / "vendor" / "autoload.php").read_text() == "live\n" and (release / "storage").is_symlink()
    again = "08122026-100000"
    claim = site_steps.claim_release(paths, again, "{}", "==> x", None, ["storage"])
    done = _run(site_steps.build_release(paths, str(app), "main", commit, again, claim, LIVE, ["app/vendor"]),
                tmp_path)
    assert done.returncode == seam.EXIT_COPY and "app/vendor" in done.stderr, done
    assert not list(tmp_path.rglob("PWNED"))
