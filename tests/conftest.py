"""Shared fixtures and the suite's markers.

Markers (registered in pyproject.toml, `--strict-markers`), set AUTOMATICALLY at collection:

    ssh      the test uses a real OpenSSH sshd: the `sshd`, `sshd_session` or `sshd_pair` fixture
             (tests/support/sshd.py), directly or through another fixture. A test that requests it at run time
             (`request.getfixturevalue`) is invisible here: mark that parameter or test explicitly
             (tests/remote/test_lock.py's `server` fixture does).
    daemon   the test starts the daemon: it uses the `daemons` fixture (directly or through a world
             fixture), or its body names `Launcher`, `start_daemon` or `Daemon`. Starting a daemon
             in a test without the marker fails (tests/support/process.py), so none slips through.
    browser  the test drives Chromium: the `browser` fixture

So `pytest -m "not ssh and not daemon and not browser"` runs the fast tests alone (no sshd, no
daemon, no browser), and `pytest -m ssh` only the SSH ones. Shared helpers live in tests/support.
"""

from __future__ import annotations

import os
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import process
from tests.support.process import Daemons
from tests.support.sshd import sshd, sshd_pair, sshd_session  # noqa: F401

# Tests commit to real git repositories; a bare CI machine has no git identity.
for _key, _value in {
    "GIT_AUTHOR_NAME": "reconciler-tests", "GIT_AUTHOR_EMAIL": "tests@localhost",
    "GIT_COMMITTER_NAME": "reconciler-tests", "GIT_COMMITTER_EMAIL": "tests@localhost",
}.items():
    os.environ.setdefault(_key, _value)

SSH_FIXTURES = {"sshd", "sshd_session", "sshd_pair"}
DAEMON_FIXTURES = {"daemons"}
DAEMON_NAMES = {"Launcher", "start_daemon", "Daemon"}
BROWSER_FIXTURES = {"browser"}


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    """Launchers for `reconciler run`; every daemon they started is SIGKILLed at teardown.
    Using this fixture marks the test `daemon`."""
    registry = Daemons()
    try:
        yield registry
    finally:
        registry.close()


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names a function uses, nested functions and lambdas included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        function = getattr(item, "function", None)
        code = getattr(function, "__code__", None)
        if fixtures & SSH_FIXTURES:
            item.add_marker(pytest.mark.ssh)
        if fixtures & DAEMON_FIXTURES or (code is not None and _names(code) & DAEMON_NAMES):
            item.add_marker(pytest.mark.daemon)
        if fixtures & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    process.current_markers = {mark.name for mark in item.iter_markers()}



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With RECONCILER_NO_SKIP set (.ci/run sets it), a skipped test fails: in CI every test
    must really run (sshd, chromium, nginx and chattr are installed or present there)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("RECONCILER_NO_SKIP") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but RECONCILER_NO_SKIP forbids skips: {report.longrepr}"


@pytest.fixture(name="short_dir")
def short_dir_fixture(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, unless it is too long for a unix socket path (sun_path holds 108 bytes)."""
    if len(str(tmp_path / "notify.sock")) < 100:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="rcn-") as short:
        yield Path(short)
