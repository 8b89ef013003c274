"""service/journal.py, the daemon's logging: when stderr IS the journal (JOURNAL_STREAM names its
device and inode), for every level's syslog priority, that `setup` owns the `reconciler` logger
(one handler however often it runs, nothing passed up to the root logger) and that timestamps
elsewhere are UTC whatever the local zone; the <6>/<4>/<3> prefixes under the journal and the
timestamps elsewhere, against a real file. The daemon's own lines under the journal are proven in
tests/e2e/test_daemon.py."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.service import journal

TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\d|\d\d:\d\d:\d\d")


@pytest.fixture(name="reconciler_logger")
def reconciler_logger_fixture() -> Iterator[logging.Logger]:
    """setup() reconfigures the `reconciler` logger; give other tests theirs back."""
    logger = logging.getLogger("reconciler")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_stderr_is_the_journal_only_when_device_and_inode_both_match(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        st = os.fstat(stream.fileno())
        for value, expected in ((f"{st.st_dev}:{st.st_ino}", True), (f"{st.st_dev}:{st.st_ino + 1}", False),
                                (f"{st.st_dev + 1}:{st.st_ino}", False), (f"{st.st_dev}", False),
                                (f"-{st.st_dev}:{st.st_ino}", False), ("", False)):
            monkeypatch.setenv("JOURNAL_STREAM", value)
            assert journal.stderr_is_journal() is expected, value
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not journal.stderr_is_journal()


def test_a_stderr_without_a_file_descriptor_is_not_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not journal.stderr_is_journal()


def test_every_level_has_its_syslog_priority_under_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               reconciler_logger: logging.Logger) -> None:
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logger = journal.setup(logging.DEBUG)
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 25):
            logger.log(level, "at %d", level)
        stream.flush()
    assert path.read_text().splitlines() == ["<7>at 10", "<6>at 20", "<4>at 30", "<3>at 40", "<2>at 50", "<6>at 25"]


def test_setup_owns_the_reconciler_logger(monkeypatch: pytest.MonkeyPatch, reconciler_logger: logging.Logger,
                                          caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    journal.setup()
    logger = journal.setup(logging.WARNING)  # again (a second run in one process): still one handler
    assert len(logger.handlers) == 1 and not logger.propagate
    with caplog.at_level(logging.DEBUG):  # the root logger's handlers see nothing of ours
        logging.getLogger("reconciler.service.daemon").info("below the level")
        logging.getLogger("reconciler.service.daemon").warning("a child's warning")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING a child's warning"), lines
    assert not [r for r in caplog.records if r.name.startswith("reconciler")]


def test_timestamps_outside_the_journal_are_utc_whatever_the_local_zone(
        monkeypatch: pytest.MonkeyPatch, reconciler_logger: logging.Logger) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("TZ", "XST-05:30")  # POSIX for UTC+05:30: local time would show another hour and minute
    time.tzset()
    try:
        handler = journal.setup().handlers[0]
        record = logging.LogRecord("reconciler", logging.INFO, __file__, 1, "deployed", None, None)
        record.created = 86400 * 365  # 1971-01-01T00:00:00Z
        assert handler.format(record) == "1971-01-01T00:00:00Z INFO    deployed"
    finally:
        monkeypatch.undo()
        time.tzset()


def _log_through_setup(path: Path, monkeypatch: pytest.MonkeyPatch, stream_id: Callable[[os.stat_result], str] | None,
                       ) -> list[str]:
    with open(path, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        if stream_id is None:
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        else:
            monkeypatch.setenv("JOURNAL_STREAM", stream_id(os.fstat(stream.fileno())))
        logger = journal.setup()
        logger.info("deployed %s", "shop.example.com")
        logger.warning("careful")
        logger.error("broken")
        for handler in logger.handlers:
            handler.flush()
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    "stream_id",
    [
        None,
        lambda st: f"{st.st_dev}:{st.st_ino + 1}",  # the journal is some other stream (stderr redirected)
        lambda st: f"{st.st_dev + 1}:{st.st_ino}",
        lambda st: "garbage",
        lambda st: "",
    ],
    ids=["unset", "other-inode", "other-device", "garbage", "empty"],
)
def test_logs_are_timestamped_when_stderr_is_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reconciler_logger: logging.Logger,
    stream_id: Callable[[os.stat_result], str] | None,
) -> None:
    lines = _log_through_setup(tmp_path / "plain", monkeypatch, stream_id)
    assert len(lines) == 3, lines
    assert not any(re.match(r"<\d>", line) for line in lines), lines
    assert "deployed shop.example.com" in lines[0] and "careful" in lines[1] and "broken" in lines[2], lines
    # Not the journal: nothing else dates the lines, so each starts with a UTC time and its level.
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|ERROR) ")
    assert all(stamp.match(line) for line in lines), lines
    assert lines[1].split()[1] == "WARNING" and lines[2].split()[1] == "ERROR", lines
