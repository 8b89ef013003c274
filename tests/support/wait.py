"""Bounded polling: every wait in the suite goes through `wait_until`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               diagnostics: Callable[[], str] | None = None, step: float = 0.1, fail: bool = True) -> Any:
    """Poll `predicate` until it returns something truthy (returned); fail the test after
    `timeout`, with `diagnostics()` appended (with `fail=False`, return None instead: the caller
    judges what the predicate saw). Errors a half-written file or a process that is still
    starting raise (OSError, ValueError, KeyError) count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            if not fail:
                return None
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{diagnostics()}" if diagnostics else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}", pytrace=False)
        time.sleep(step)
