"""Servers on this host for fast executor tests: a transport that runs each command with /bin/sh
in a private mount namespace where the server's own directory is bind-mounted at the sites' base
path (as tests/support/sshd.py does for an sshd, without the sshd), and records every command it sends.

Real commands on real files (git clones, manifests, symlinks), no SSH: a rollout over two such
servers takes a second, and the commands each one received say how many round trips it cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.remote.transport.base import Result, Transport
from tests.support.sshd import _unshare_command


@dataclass
class Sent:
    command: str
    stdin: str | None


class RecordingTransport(Transport):
    def __init__(self, name: str, root: Path, base_path: str) -> None:
        self.name = name
        self.root = root
        self.base_path = base_path
        self.sent: list[Sent] = []
        root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RecordingTransport({self.name})"

    async def run(self, command: str, *, timeout: float, stdin: str | None = None, tied: bool = False) -> Result:
        self.sent.append(Sent(command, stdin))
        argv = _unshare_command({self.base_path: self.root}, ["/bin/sh", "-c", command])
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin is not None else None),
                                              timeout)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        assert process.returncode is not None
        return Result(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def clear(self) -> None:
        self.sent.clear()

    def count(self, marker: str) -> int:
        """How many commands sent contain `marker` (in their text or their stdin)."""
        return sum(marker in sent.command or marker in (sent.stdin or "") for sent in self.sent)


@dataclass
class RecordingPool:
    """What the engine asks of a transport pool, over RecordingTransports by server name."""

    servers: dict[str, RecordingTransport]
    allow_local: bool = False
    closed: list[str] = field(default_factory=list)

    def get(self, server: str) -> Transport:
        return self.servers[server]

    def session_cap(self, server: str) -> int | None:
        return None

    async def close(self) -> None:
        self.closed.append("closed")
