"""LocalTransport (server "local"): commands run on this machine with /bin/sh, as over SSH: exit
status and streams returned, stdin passed through, a timeout or a cancellation kills the whole
command tree, and a command too long to start is its own failure, not a lost server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from reconciler.errors import TransportError
from reconciler.remote.protocol import seam
from reconciler.remote.transport.base import Result
from reconciler.remote.transport.local import LocalTransport

TIMEOUT = 20.0


def _run(transport: LocalTransport, command: str, stdin: str | None = None, timeout: float = TIMEOUT) -> Result:
    return asyncio.run(transport.run(command, timeout=timeout, stdin=stdin))


def _gone(pid: int) -> bool:
    """True when `pid` has exited (no such process, or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int) -> bool:
    # SIGKILL is delivered asynchronously; give the kernel a moment to finish the process.
    deadline = time.monotonic() + 5
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_exit_status_stdout_and_stderr_come_back_and_sh_runs_it() -> None:
    assert _run(LocalTransport(), "echo out; echo err >&2; exit 7") == Result(7, "out\n", "err\n")
    assert _run(LocalTransport(), 'echo "$0"').stdout == "/bin/sh\n"


def test_stdin_is_passed_through_and_without_it_the_command_reads_eof() -> None:
    data = "line one\nline 'two' $x\n" * 50
    assert _run(LocalTransport(), "cat", stdin=data) == Result(0, data, "")
    assert _run(LocalTransport(), "cat; echo eof", timeout=10) == Result(0, "eof\n", "")


def _assert_gone(pid_file: Path, after: str) -> None:
    """The background child whose pid is in `pid_file` is gone (killed with its tree); it is
    killed here if not, so a failing test leaves nothing behind."""
    pid = int(pid_file.read_text())
    try:
        assert _wait_gone(pid), f"background child {pid} survived {after}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_timeout_kills_the_command_tree(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The child does not hold our pipes and outlives its shell: only killing the whole tree ends it.
    with pytest.raises(TransportError, match="timed out"):
        _run(LocalTransport(), f"sleep 300 >/dev/null 2>&1 & echo $! > {pid_file}; sleep 20", timeout=1)
    _assert_gone(pid_file, "the timeout")


def test_a_command_too_long_to_start_is_a_failure_not_a_transport_error() -> None:
    result = _run(LocalTransport(), "printf %s " + seam.quote("'" * 60_000))
    assert result.exit_status == seam.EXIT_CANNOT_RUN
    assert "Argument list too long" in result.stderr
    assert _run(LocalTransport(), "echo fine") == Result(0, "fine\n", "")



def test_a_cancelled_command_is_killed_with_its_children(tmp_path: Path) -> None:
    """A pass that is cancelled (shutdown, a site's deadline) takes its local command down too."""
    pid_file = tmp_path / "child.pid"

    async def cancel_midway() -> None:
        task = asyncio.create_task(LocalTransport().run(
            f"sleep 300 >/dev/null 2>&1 & echo $! > {pid_file}; sleep 20", timeout=60))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    _assert_gone(pid_file, "the cancellation")


def test_every_command_counts_as_a_round_trip_and_bytes_that_are_no_utf8_are_replaced() -> None:
    transport = LocalTransport()

    async def two() -> list[Result]:
        return [await transport.run(r"printf 'a\377b'; printf '\376' >&2", timeout=TIMEOUT),
                await transport.run("exit 0", timeout=TIMEOUT)]

    first, _ = asyncio.run(two())
    assert first == Result(0, "a\ufffdb", "\ufffd")
    assert transport.round_trips == 2
    assert transport.name == "local"


def test_a_tied_command_runs_with_its_stdin_as_any_other() -> None:
    assert _run_tied("cat; echo end", "it's $x\n") == Result(0, "it's $x\nend\n", "")


def _run_tied(command: str, stdin: str) -> Result:
    return asyncio.run(LocalTransport().run(command, timeout=TIMEOUT, stdin=stdin, tied=True))
