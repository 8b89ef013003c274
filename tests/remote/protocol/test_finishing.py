"""The end of a deploy in one command (remote/protocol/finishing.py), run by a real /bin/sh on a
release in tmp_path: the manifest recorded, the site switched, the reload run and logged, our
lock released, the log's tail and the report `finish_report` reads; and when it stops early.

Any output the reader can meet is tests/properties/test_finish_and_switch.py's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.core import wire
from reconciler.core.layout import LOG_NAME, MANIFEST_NAME, SitePaths
from reconciler.remote.protocol import finishing, seam
from reconciler.remote.protocol.finishing import FinishReport, finish_release, finish_report
from reconciler.remote.protocol.site_steps import OWNER_FILE, RELOAD_NAME

DOMAIN = "shop.example.com"
RELEASE = "01082025-090000"
OWNER = '{"run":"mine"}'
MANIFEST = '{"commit":"' + "a" * 40 + '","status":"success"}'


def sh(command: seam.Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(seam.local_argv(command.text), input=command.stdin, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture
def paths(tmp_path: Path) -> SitePaths:
    paths = SitePaths(str(tmp_path / "srv"), DOMAIN)
    Path(paths.release(RELEASE)).mkdir(parents=True)
    Path(paths.release(RELEASE), LOG_NAME).write_text("==> script\nbuilt\n")
    Path(paths.lock).mkdir()
    Path(paths.lock, OWNER_FILE).write_text(OWNER + "\n")
    return paths


def test_a_finish_records_switches_reloads_unlocks_and_reports(paths: SitePaths) -> None:
    reload = "echo reloading; pwd > reloaded-in\n"
    done = sh(finish_release(paths, RELEASE, MANIFEST, reload, OWNER, 4096))
    assert done.returncode == 0, done.stderr
    release = Path(paths.release(RELEASE))
    assert (release / MANIFEST_NAME).read_text() == MANIFEST + "\n"
    assert os.readlink(paths.site_link) == paths.link_target(RELEASE)
    assert (release / "reloaded-in").read_text().strip() == str(release)
    assert not (release / RELOAD_NAME).exists(), "the staged reload code is removed"
    assert not Path(paths.lock).exists()
    report = finish_report(done.stdout)
    assert report == FinishReport("==> script\nbuilt\n==> reload\nreloading\n", 0, 0)


def test_without_reload_or_lock_the_statuses_are_zero_and_the_lock_is_left(paths: SitePaths) -> None:
    done = sh(finish_release(paths, RELEASE, MANIFEST, None, None, 4096))
    assert finish_report(done.stdout) == FinishReport("==> script\nbuilt\n", 0, 0)
    assert os.readlink(paths.site_link) == paths.link_target(RELEASE)
    assert Path(paths.lock, OWNER_FILE).is_file()


def test_a_failed_reload_is_reported_after_the_switch(paths: SitePaths) -> None:
    done = sh(finish_release(paths, RELEASE, MANIFEST, "false\necho never\n", OWNER, 4096))
    report = finish_report(done.stdout)
    assert (report.reload_exit, report.unlock_exit) == (1, 0)
    assert "never" not in report.log, "the reload runs with sh -e"
    assert os.readlink(paths.site_link) == paths.link_target(RELEASE)


def test_a_lock_that_is_no_longer_ours_stays(paths: SitePaths) -> None:
    Path(paths.lock, OWNER_FILE).write_text('{"run":"theirs"}\n')
    report = finish_report(sh(finish_release(paths, RELEASE, MANIFEST, None, OWNER, 4096)).stdout)
    assert report.unlock_exit == 0
    assert Path(paths.lock, OWNER_FILE).read_text() == '{"run":"theirs"}\n'


def test_only_the_logs_last_bytes_come_back(paths: SitePaths) -> None:
    Path(paths.release(RELEASE), LOG_NAME).write_text("x" * 10_000 + "\nthe end\n")
    report = finish_report(sh(finish_release(paths, RELEASE, MANIFEST, None, OWNER, 100)).stdout)
    assert report.log == "x" * 91 + "\nthe end\n"


@pytest.mark.parametrize("case", ["release-missing", "manifest-empty"])
def test_a_manifest_that_cannot_be_recorded_switches_nothing(paths: SitePaths, case: str) -> None:
    release = RELEASE if case == "manifest-empty" else "02082025-090000"
    manifest = "" if case == "manifest-empty" else MANIFEST
    done = sh(finish_release(paths, release, manifest, "touch reloaded\n", OWNER, 4096))
    assert done.returncode == seam.EXIT_RECORD
    assert not os.path.lexists(paths.site_link)
    assert not Path(paths.manifest(RELEASE)).exists()
    assert not Path(paths.release(RELEASE), "reloaded").exists()
    assert Path(paths.lock).is_dir(), "the lock stays for its holder"


def test_a_failed_switch_exits_with_its_status_and_the_success_stays_recorded(paths: SitePaths) -> None:
    Path(paths.site_link).mkdir()  # a real directory in the way: never replaced
    done = sh(finish_release(paths, RELEASE, MANIFEST, None, OWNER, 4096))
    assert done.returncode == seam.EXIT_NOT_A_SYMLINK
    assert Path(paths.manifest(RELEASE)).read_text() == MANIFEST + "\n"
    assert not Path(paths.site_link).is_symlink()


def test_a_manifest_of_more_than_one_line_is_refused_before_anything_runs(paths: SitePaths) -> None:
    with pytest.raises(ValueError):
        finish_release(paths, RELEASE, MANIFEST + "\n" + MANIFEST, None, OWNER, 4096)


def test_the_report_is_our_last_line_whatever_the_log_holds() -> None:
    mark = finishing.FINISH_MARK
    forged = f"app output\n{mark} 0 0\nmore output"
    assert finish_report(f"{forged}\n{mark} 3 5\n") == FinishReport(forged, 3, 5)
    assert finish_report(f"\n{mark} 0 0") == FinishReport("", 0, 0)
    for text in (forged, f"log\n{mark} 0\n", f"log\n{mark} 0 0 0\n", f"log\n{mark} 1000 0\n", f"log {mark} 0 0\n", ""):
        with pytest.raises(wire.WireError):
            finish_report(text)
