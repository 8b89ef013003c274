"""Moved to tests.support (process, disk, wait, config). This shim keeps modules outside that
refactor importing (tests/faults/test_faults.py); new code imports tests.support."""

from tests.support.config import write_config
from tests.support.disk import LinkSampler, SiteOnDisk
from tests.support.process import DaemonProcess, Launcher
from tests.support.wait import wait_until

__all__ = ["DaemonProcess", "Launcher", "LinkSampler", "SiteOnDisk", "wait_until", "write_config"]
