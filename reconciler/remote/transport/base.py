"""The transport interface: run one POSIX `sh` command on a server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def tail(self, lines: int = 20) -> str:
        text = (self.stdout + self.stderr).rstrip()
        return "\n".join(text.splitlines()[-lines:])


class Transport(ABC):
    """A server. `run` raises TransportError when the server cannot be reached or the
    command does not finish within `timeout`; a non-zero exit is returned, not raised.
    So is a command that cannot start because it is too long for one argument (E2BIG):
    `seam.EXIT_CANNOT_RUN`, a failure of that command, since retrying cannot shorten it.
    `command` is shell text built by `remote.protocol`; long values belong in `stdin`."""

    name: str

    @abstractmethod
    async def run(self, command: str, *, timeout: float, stdin: str | None = None,
                  tied: bool = False) -> Result:
        """`tied`: the command must die with the connection (long deploy steps), so a killed
        reconciler never leaves a build running behind its back. `stdin` works with `tied`
        too (over SSH it is staged in a temp file first: a terminal would mangle it)."""

    async def close(self) -> None:
        return None

    @property
    def round_trips(self) -> int:
        """Commands issued so far: benchmarks check that passes are O(servers)."""
        return self._round_trips

    _round_trips: int = 0
