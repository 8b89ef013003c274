"""The command line's side of the daemon's control socket (service/control.py): is a daemon
running on this state directory, and if so, wake it (and wait for a pin's switch)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.service.control import MAX_LINE, Answer, ControlError, Wake, address, encode_request, parse_answer
from reconciler.service.control import socket_path as socket_path

_SLACK = 10.0  # beyond the wait asked for: the daemon's answer is on its way


async def wake(state_dir: Path, request: Wake) -> Answer | None:
    """Send `request` to the daemon of `state_dir` and read its answer. None: no daemon runs
    there (no socket, or a stale one nobody listens on)."""
    path = socket_path(state_dir)
    try:
        with address(path) as name:
            reader, writer = await asyncio.open_unix_connection(name, limit=MAX_LINE + 1)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except OSError as exc:
        # E.g. the daemon runs as another user: acting here as well would race it.
        raise ReconcilerError(f"cannot reach the daemon's control socket {path}: {exc.strerror or exc}") from None
    try:
        writer.write(encode_request(request))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), request.wait + _SLACK)
    except (OSError, TimeoutError) as exc:
        raise ReconcilerError(f"the daemon did not answer on {path}: {exc or 'timed out'}") from None
    finally:
        writer.close()
    if not line:
        raise ReconcilerError(f"the daemon closed {path} before answering (stopping?); see `reconciler status`")
    try:
        answer = parse_answer(line)
    except ControlError as exc:
        raise ReconcilerError(f"the daemon's answer on {path} is not understood: {exc}") from None
    if not answer.ok:
        raise ReconcilerError(f"the daemon refused the request: {answer.error}")
    return answer
