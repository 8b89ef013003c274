"""The command line's side of the control socket: no socket, or a stale one nobody listens
on, is "no daemon" (None); a socket that refuses, closes without answering or answers nonsense
is an error naming the socket, never taken for "no daemon" (acting too would race a daemon)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from reconciler.cli.control import wake
from reconciler.errors import ReconcilerError
from reconciler.service.control import Wake, address, socket_path
from tests.support.aio import synchronous

ASK = Wake(("shop.example.com",))



@synchronous
async def test_no_socket_or_a_stale_one_means_no_daemon(tmp_path: Path) -> None:
    assert await wake(tmp_path, ASK) is None
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with address(socket_path(tmp_path)) as name:
        stale.bind(name)
    stale.close()
    assert await wake(tmp_path, ASK) is None


@asynccontextmanager
async def answering(tmp_path: Path, reply: bytes) -> AsyncIterator[None]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(reply)
        await writer.drain()
        writer.close()

    with address(socket_path(tmp_path)) as name:
        server = await asyncio.start_unix_server(serve, name)
    try:
        yield
    finally:
        server.close()


@pytest.mark.parametrize("reply", [b"", b"nonsense\n", b'{"ok": false, "error": "no"}\n',
                                   b'{"ok": true, "outcome": {"sync": "Fine"}}\n'])
@synchronous
async def test_a_daemon_that_does_not_answer_properly_is_an_error(tmp_path: Path, reply: bytes) -> None:
    async with answering(tmp_path, reply):
        with pytest.raises(ReconcilerError, match="daemon"):
            await wake(tmp_path, ASK)


@synchronous
async def test_a_proper_answer_is_read(tmp_path: Path) -> None:
    async with answering(tmp_path, b'{"ok": true}\n'):
        answer = await wake(tmp_path, ASK)
    assert answer is not None and answer.ok
