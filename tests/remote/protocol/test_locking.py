"""The site lock's commands (remote/protocol/locking.py), run by a real /bin/sh on a layout in
tmp_path, and the readers of what they print (`held_age`, `still_beating`, `switched`).

The round trip for any owner (the first taker holds it, the next reads its owner, only the owner
releases) is tests/properties/test_lock_protocol.py's; the heartbeat loop's timing is
tests/faults/test_lock_heartbeat.py's. Here: one example of each command and each answer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.core import wire
from reconciler.core.facts import ProbeSite
from reconciler.core.layout import MANIFEST_NAME, SitePaths
from reconciler.core.manifest import Manifest
from reconciler.remote.protocol import locking, seam
from reconciler.remote.protocol.probing import parse_probe
from reconciler.remote.protocol.site_steps import OWNER_FILE, SCRIPT_NAME
from tests.support import wait_until

DOMAIN = "shop.example.com"
MINE = '{"run":"mine"}'
THEIRS = '{"run":"theirs"}'
RELEASE = "01082025-090000"


def sh(command: seam.Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(seam.local_argv(command.text), input=command.stdin, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture
def paths(tmp_path: Path) -> SitePaths:
    (tmp_path / "srv").mkdir()
    return SitePaths(str(tmp_path / "srv"), DOMAIN)


def plant(paths: SitePaths, owner: str, age: float = 0.0) -> Path:
    """A lock already on the server, held by `owner`, last touched `age` seconds ago."""
    lock = Path(paths.lock)
    lock.mkdir(parents=True)
    (lock / OWNER_FILE).write_text(owner + "\n")
    moment = time.time() - age
    os.utime(lock, (moment, moment))
    return lock


def success(paths: SitePaths, name: str, **fields: str) -> None:
    Path(paths.release(name)).mkdir(parents=True)
    manifest = Manifest("a" * 40, "main", "/srv/app.git", "k" * 16, "success")
    Path(paths.manifest(name)).write_text(manifest.to_json()[:-1] + "".join(
        f',"{key}":"{value}"' for key, value in fields.items()) + "}\n")


# --- taking the lock --------------------------------------------------------------------------------


def test_an_acquired_lock_answers_acquired_then_the_sites_probe(paths: SitePaths) -> None:
    success(paths, RELEASE)
    done = sh(locking.lock_acquire(paths, MINE))
    first, _, probe = done.stdout.partition("\n")
    assert (done.returncode, first) == (0, locking.LOCK_ACQUIRED), done
    assert (Path(paths.lock) / OWNER_FILE).read_text() == MINE + "\n"
    facts = parse_probe(probe, [ProbeSite(DOMAIN, paths.base_path)], []).sites[DOMAIN]
    assert facts.lock == MINE, "the probe runs after the owner is written"
    assert set(facts.releases) == {RELEASE}


def test_a_script_sent_along_is_staged_in_the_lock_for_the_owner_only(paths: SitePaths) -> None:
    script = "echo 'it''s' \"$HOME\"\n" * 3
    done = sh(locking.lock_acquire(paths, MINE, script=script))
    assert done.stdout.startswith(locking.LOCK_ACQUIRED + "\n"), done
    staged = Path(paths.lock) / SCRIPT_NAME
    assert staged.read_text() == script
    assert staged.stat().st_mode & 0o077 == 0


def test_a_held_lock_answers_its_age_and_owner_and_stages_nothing(paths: SitePaths) -> None:
    lock = plant(paths, THEIRS, age=1000)
    done = sh(locking.lock_acquire(paths, MINE, script="echo mine\n"))
    first, _, rest = done.stdout.partition("\n")
    assert done.returncode == 0 and first.startswith(locking.LOCK_HELD + " "), done
    assert 1000 <= locking.held_age(first) < 1060
    assert rest.partition("\n")[0] == THEIRS
    assert not locking.still_beating(rest)
    assert (lock / OWNER_FILE).read_text() == THEIRS + "\n"
    assert not (lock / SCRIPT_NAME).exists()


def test_a_held_answer_says_beating_while_the_holders_command_runs(paths: SitePaths) -> None:
    assert locking.beating(seam.Command("true"), None) == seam.Command("true")
    plant(paths, THEIRS)
    beat = locking.Beat(paths.lock, THEIRS, interval=1, limit=60)
    started = Path(paths.base_path, "started")
    step = locking.beating(seam.Command(f"touch {seam.quote(str(started))}; sleep 30"), beat)
    process = subprocess.Popen(seam.local_argv(step.text), start_new_session=True)
    try:
        wait_until(started.exists, 10, "the beating command started")
        beat_pid = (Path(paths.lock) / locking.BEAT_FILE).read_text().strip()
        assert beat_pid == str(process.pid), "the PID of the command's own shell"
        assert locking.still_beating(sh(locking.lock_acquire(paths, MINE)).stdout)
        # Its shell is killed (no EXIT trap runs, the PID stays in the lock) and not reaped yet: a
        # zombie is no running command.
        os.killpg(process.pid, signal.SIGKILL)
        wait_until(lambda: _state(process.pid) == "Z", 10, "the killed shell is a zombie")
        assert (Path(paths.lock) / locking.BEAT_FILE).read_text().strip() == beat_pid
        assert not locking.still_beating(sh(locking.lock_acquire(paths, MINE)).stdout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not locking.still_beating(sh(locking.lock_acquire(paths, MINE)).stdout), "gone altogether"


def _state(pid: int) -> str:
    """The process's state letter in /proc (Linux): R, S, Z..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# --- keeping and letting go ---------------------------------------------------------------------------


def test_refresh_touches_our_lock_and_reports_a_lost_one(paths: SitePaths) -> None:
    lock = plant(paths, MINE, age=1000)
    assert sh(locking.lock_refresh(paths, MINE)).returncode == 0
    assert time.time() - lock.stat().st_mtime < 60
    os.utime(lock, (0, 0))
    assert sh(locking.lock_refresh(paths, THEIRS)).returncode == locking.EXIT_LOCK_LOST
    assert lock.stat().st_mtime == 0, "a lock that is not ours is not kept alive"


def test_release_removes_only_our_own_lock(paths: SitePaths) -> None:
    lock = plant(paths, THEIRS)
    assert sh(locking.lock_release(paths, MINE)).returncode == 0
    assert (lock / OWNER_FILE).read_text() == THEIRS + "\n"
    assert sh(locking.lock_release(paths, THEIRS)).returncode == 0
    assert not lock.exists()
    assert sh(locking.lock_release(paths, THEIRS)).returncode == 0, "a lock already gone is released"


def test_takeover_and_unlock_remove_a_lock_whoever_holds_it(paths: SitePaths) -> None:
    lock = plant(paths, THEIRS)
    assert sh(locking.lock_takeover(paths)).returncode == 0
    assert not lock.exists()
    assert os.listdir(paths.deployments) == [], "the lock moved aside is removed too"
    plant(paths, THEIRS)
    done = sh(locking.unlock(paths))
    assert (done.returncode, done.stdout) == (0, THEIRS + "\n\n")
    assert os.listdir(paths.deployments) == []
    assert sh(locking.lock_takeover(paths)).returncode == 0, "no lock: nothing to do"


# --- switching a pin under the lock ---------------------------------------------------------------------


def _switch_line(paths: SitePaths, activate: str) -> str:
    done = sh(locking.lock_acquire(paths, MINE, activate=activate))
    lines = done.stdout.split("\n")
    assert lines[0] == locking.LOCK_ACQUIRED, done
    sh(locking.lock_release(paths, MINE))
    return lines[1]


def test_an_activating_lock_switches_to_a_successful_release_once(paths: SitePaths) -> None:
    success(paths, RELEASE)
    assert locking.switched(_switch_line(paths, RELEASE)) == 0
    assert os.readlink(paths.site_link) == paths.link_target(RELEASE)
    assert locking.switched(_switch_line(paths, RELEASE)) is None, "already live: not tried again"


@pytest.mark.parametrize("state", ["missing", "failed", "once-pending"])
def test_an_activating_lock_does_not_switch_to_a_release_that_may_not_go_live(paths: SitePaths, state: str) -> None:
    if state == "failed":
        Path(paths.release(RELEASE)).mkdir(parents=True)
        Path(paths.manifest(RELEASE)).write_text(
            Manifest("a" * 40, "main", "/srv/app.git", "k" * 16, "failed").to_json() + "\n")
    elif state == "once-pending":
        success(paths, RELEASE, once="pending")
    assert locking.switched(_switch_line(paths, RELEASE)) is None
    assert not os.path.lexists(paths.site_link)


def test_an_activating_lock_reports_a_switch_that_failed(paths: SitePaths) -> None:
    success(paths, RELEASE)
    Path(paths.site_link).mkdir()  # a real directory where the link goes: never replaced
    status = locking.switched(_switch_line(paths, RELEASE))
    assert status not in (None, 0)
    assert Path(paths.site_link).is_dir() and not Path(paths.site_link).is_symlink()
    assert (Path(paths.release(RELEASE)) / MANIFEST_NAME).is_file()


# --- the readers --------------------------------------------------------------------------------------


def test_switched_reads_an_exit_status_or_not_tried_and_nothing_else() -> None:
    mark = locking.SWITCHED
    assert locking.switched(f"{mark} 0") == 0
    assert locking.switched(f"{mark} 255") == 255
    assert locking.switched(f"{mark} -") is None
    for line in (f"{mark} 256", f"{mark} ", f"{mark}", f"{mark}  0", f"{mark} -1", f"{mark} 0x1", "@@switchedx 0",
                 f"{locking.LOCK_ACQUIRED}"):
        with pytest.raises(wire.WireError):
            locking.switched(line)


def test_held_age_is_now_minus_the_heartbeat_and_zero_when_unknown() -> None:
    held = locking.LOCK_HELD
    assert locking.held_age(f"{held} 1700000100 1700000000") == 100.0
    assert locking.held_age(f"{held} 1700000100 0") == 0.0, "no mtime read: unknown"
    assert locking.held_age(f"{held} 1700000100") == 0.0
    assert locking.held_age(f"{held} 17000001x0 1700000000") == 0.0
    assert locking.held_age(f"{held} 1700000100 1700000000 extra") == 0.0


def test_still_beating_reads_only_the_last_line() -> None:
    beating, idle = f"{locking.LOCK_BEATING} 1", f"{locking.LOCK_BEATING} 0"
    assert locking.still_beating(f"{locking.LOCK_HELD} 1 1\n{THEIRS}\n{beating}\n")
    assert not locking.still_beating(f"{locking.LOCK_HELD} 1 1\n{THEIRS}\n{idle}\n")
    # An owner's text that forges the beating line is not the last line: ours is printed after it.
    assert not locking.still_beating(f"{locking.LOCK_HELD} 1 1\n{beating}\n{idle}\n")
    assert not locking.still_beating(f"{locking.LOCK_HELD} 1 1\n{THEIRS}\n")
