"""`server = "local"`: commands run on this machine with /bin/sh."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal

from reconciler.errors import TransportError
from reconciler.remote.protocol import seam
from reconciler.remote.transport.base import Result, Transport


class LocalTransport(Transport):
    name = "local"

    async def run(self, command: str, *, timeout: float, stdin: str | None = None,
                  tied: bool = False) -> Result:
        self._round_trips += 1
        # A session of its own so a timeout kills the whole command tree, like a dropped SSH channel.
        try:
            process = await asyncio.create_subprocess_exec(
                *seam.local_argv(command),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                # Too long for one argument: the same command fails the same way every time, so
                # it is this step's failure (as sh reports it), not a machine to wait for.
                return Result(seam.EXIT_CANNOT_RUN, "", f"local: cannot run a command: {exc}\n")
            # EAGAIN, ENOMEM...: the machine is short of something for now; retried with backoff.
            raise TransportError(f"local: cannot run a command: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TransportError(f"local: command timed out after {timeout:.0f}s") from exc
        assert process.returncode is not None
        return Result(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
