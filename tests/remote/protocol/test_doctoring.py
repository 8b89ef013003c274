"""The doctor's command (remote/protocol/doctoring.py) run by a real /bin/sh, read back with
`parse_answers`: what each kind of check answers when the thing is there and when it is really
missing (a PATH without the program, a php-fpm.conf without process_control_timeout, a
repository that does not answer, a file system without the space asked for), and examples of
the strict reader. Any output is tests/properties/test_doctor_answers.py's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.remote.protocol import seam
from reconciler.remote.protocol.doctoring import (
    ANSWERED_TWICE,
    MALFORMED,
    NO_ANSWER,
    Answer,
    Check,
    Kind,
    doctor,
    frame,
    parse_answers,
)
from tests.support import git, make_app_repo
from tests.support.restricted_path import path_without


def run(*checks: Check, path: str | None = None) -> list[Answer]:
    command = doctor(checks, 10)
    env = {**os.environ, "PATH": path} if path is not None else None
    done = subprocess.run(seam.local_argv(command.text), input=command.stdin, capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    return parse_answers(done.stdout, len(checks))


def test_a_program_on_the_path_is_found_and_one_left_out_is_missing(tmp_path: Path) -> None:
    without_curl = path_without(tmp_path, "curl")
    git_found, curl = run(Check(Kind.PROGRAM, ("git",)), Check(Kind.PROGRAM, ("curl",)), path=without_curl)
    assert git_found == Answer(True, f"{without_curl}/git")
    assert curl == Answer(False, f"not found on PATH {without_curl}")
    assert run(Check(Kind.PROGRAM, ("curl",)))[0].ok


def test_gnu_find_is_recognised_by_its_printf() -> None:
    [answer] = run(Check(Kind.GNU_FIND))
    assert answer.ok and "GNU findutils" in answer.detail


def test_git_ls_remote_of_a_repository_answers_or_says_why(tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    there, gone = run(Check(Kind.GIT_REMOTE, (str(app),)), Check(Kind.GIT_REMOTE, (str(tmp_path / "nope"),)))
    assert there == Answer(True, "git ls-remote answered")
    assert not gone.ok and gone.detail.startswith("git ls-remote exit 128: ") and "nope" in gone.detail
    # Without git at all, it says so.
    [no_git] = run(Check(Kind.GIT_REMOTE, (str(app),)), path=path_without(tmp_path, "git"))
    assert no_git == Answer(False, "git is not installed")
    assert git(app, "rev-parse", "HEAD")  # the repository was only listed


def test_sudo_without_a_password_for_the_reload(tmp_path: Path) -> None:
    words = ("service", "php8.2-fpm", "reload")
    [missing] = run(Check(Kind.SUDO, words), path=path_without(tmp_path, "sudo"))
    assert missing == Answer(False, "sudo is not installed")
    if os.geteuid() != 0 or not run(Check(Kind.PROGRAM, ("sudo",)))[0].ok:
        pytest.fail("needs root and sudo (.ci/deps installs it)")
    [allowed] = run(Check(Kind.SUDO, words))
    assert allowed == Answer(True, "sudo -n allows: service php8.2-fpm reload")


@pytest.mark.parametrize(("conf", "ok", "detail"), [
    ("[global]\nprocess_control_timeout = 10s\n", True, "process_control_timeout = 10s in {f}"),
    ("[global]\n  process_control_timeout=20 ; seconds\n", True, "process_control_timeout = 20 in {f}"),
    ("[global]\nprocess_control_timeout = 0\n", False, "process_control_timeout is 0 in {f}"),
    ("[global]\n;process_control_timeout = 10s\n", False, "process_control_timeout is not set in {f}"),
    ("[global]\npid = /run/php/php8.2-fpm.pid\n", False, "process_control_timeout is not set in {f}"),
    (None, False, "no {f} here"),
])
def test_php_fpm_process_control_timeout(tmp_path: Path, conf: str | None, ok: bool, detail: str) -> None:
    path = tmp_path / "php-fpm.conf"
    if conf is not None:
        path.write_text(conf)
    assert run(Check(Kind.FPM, (str(path),))) == [Answer(ok, detail.format(f=path))]


def test_disk_space_of_base_path_or_its_nearest_parent(tmp_path: Path) -> None:
    base = tmp_path / "not" / "there" / "yet"
    enough, short = run(Check(Kind.DISK, (str(base), "1")), Check(Kind.DISK, (str(base), str(2 ** 60))))
    assert enough.ok and enough.detail.endswith(f"KiB free on {tmp_path}")
    assert not short.ok and short.detail.endswith(f"KiB free on {tmp_path}")


def test_every_check_answers_at_once_in_its_own_record(tmp_path: Path) -> None:
    checks = [Check(Kind.PROGRAM, ("git",)), Check(Kind.GNU_FIND), Check(Kind.DISK, (str(tmp_path), "1")),
              Check(Kind.PROGRAM, ("no-such-program-here",))]
    assert [a.ok for a in run(*checks)] == [True, True, True, False]


def test_a_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="single line"):
        doctor([Check(Kind.GIT_REMOTE, ("/srv/x\nrm -rf /",))], 10)


def test_the_reader_is_strict() -> None:
    good = frame(True, 0, "/usr/bin/git")
    assert parse_answers(good + frame(False, 1, "x"), 2) == [Answer(True, "/usr/bin/git"), Answer(False, "x")]
    assert parse_answers(good + good, 1) == [Answer(False, ANSWERED_TWICE)]
    assert parse_answers(good[:-1], 1) == [Answer(False, NO_ANSWER)]
    assert parse_answers(frame(True, 0, "tab\there"), 1) == [Answer(False, MALFORMED)]
    assert parse_answers(frame(True, 5, "out of range"), 1) == [Answer(False, NO_ANSWER)]
    assert parse_answers("@@ok 0 x\0", 0) == []
