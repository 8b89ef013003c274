"""The daemon's control socket: owner-only at {state_dir}/control.sock (any depth of state_dir),
a request wakes the daemon at once; a request waiting for a pin's round is answered by the
first outcome of that site at that declarations commit (a lock wait is not one), or times
out; a stale socket is replaced, a live daemon's is left alone; a bad line is refused."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import pytest

from reconciler.cli.control import wake
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import SiteOutcome
from reconciler.errors import ReconcilerError
from reconciler.service.control import ControlSocket, Wake, address, socket_path
from tests.support.aio import synchronous

A, B = "a" * 40, "b" * 40
DOMAIN = "shop.example.com"



class Daemonish:
    def __init__(self) -> None:
        self.woken: list[Wake] = []
        self.control = ControlSocket(self.wake, lambda domain: "01012026-000000")

    def wake(self, wake: Wake) -> str | None:
        self.woken.append(wake)
        return "not my shard" if "other.example.com" in wake.domains else None


def _outcome(sync: Sync = Sync.SYNCED, retry_after: float | None = None, backoff: bool = False) -> SiteOutcome:
    return SiteOutcome(DOMAIN, "web-1", sync, Health.HEALTHY, "", retry_after=retry_after, backoff=backoff)


@synchronous
async def test_a_request_wakes_at_once_on_an_owner_only_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "state"  # beyond a socket address's 108 bytes
    deep.mkdir(parents=True)
    daemon = Daemonish()
    assert await daemon.control.start(deep)
    try:
        assert stat.S_IMODE(socket_path(deep).stat().st_mode) == 0o600
        answer = await wake(deep, Wake((DOMAIN,)))
        assert answer is not None and answer.ok and answer.outcome is None
        assert daemon.woken == [Wake((DOMAIN,))]
    finally:
        await daemon.control.close()
    assert not socket_path(deep).exists(), "closed: the CLI sees no daemon"
    assert await wake(deep, Wake((DOMAIN,))) is None


@synchronous
async def test_a_wait_is_answered_by_the_round_at_the_landed_commit(tmp_path: Path) -> None:
    daemon = Daemonish()
    assert await daemon.control.start(tmp_path)
    try:
        asked = asyncio.ensure_future(wake(tmp_path, Wake((DOMAIN,), B, 30)))
        while not daemon.woken:
            await asyncio.sleep(0.01)
        daemon.control.settled(DOMAIN, A, _outcome())                         # an older commit's round
        daemon.control.settled(DOMAIN, B, _outcome(retry_after=5))            # waiting for a lock
        daemon.control.settled("other.example.com", B, _outcome())
        await asyncio.sleep(0.1)
        assert not asked.done()
        daemon.control.settled(DOMAIN, B, _outcome(Sync.FAILED, retry_after=10, backoff=True))  # an outcome
        answer = await asked
        assert answer is not None and answer.outcome is not None
        assert (answer.outcome.sync, answer.outcome.live) == ("Failed", "01012026-000000")
        assert daemon.woken[0].landed == B
    finally:
        await daemon.control.close()


@synchronous
async def test_a_site_the_daemon_does_not_own_is_refused_at_once(tmp_path: Path) -> None:
    daemon = Daemonish()
    assert await daemon.control.start(tmp_path)
    try:
        with pytest.raises(ReconcilerError, match="not my shard"):
            await wake(tmp_path, Wake(("other.example.com",), B, 30))
    finally:
        await daemon.control.close()


@synchronous
async def test_a_wait_times_out(tmp_path: Path) -> None:
    daemon = Daemonish()
    assert await daemon.control.start(tmp_path)
    try:
        answer = await wake(tmp_path, Wake((DOMAIN,), B, 0.2))
        assert answer is not None and answer.timeout and answer.outcome is None
    finally:
        await daemon.control.close()


@synchronous
async def test_a_stale_socket_is_replaced_and_a_live_one_left_alone(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with address(socket_path(tmp_path)) as name:
        stale.bind(name)
    stale.close()  # a daemon that died: the file stays, nobody listens
    first, second = Daemonish(), Daemonish()
    assert await first.control.start(tmp_path)
    try:
        assert not await second.control.start(tmp_path), "another daemon answers there"
        await second.control.close()
        assert await wake(tmp_path, Wake((DOMAIN,))) is not None
        assert first.woken and not second.woken
    finally:
        await first.control.close()


@pytest.mark.parametrize("line", [b"hello\n", b'{"wake": []}\n', b'{"wake": ["a b"]}\n',
                                  b'{"wake": ["x"], "landed": "HEAD"}\n', b'{"wake": ["x"], "wait": -1}\n',
                                  b'{"wake": ["x"], "rm": true}\n'])
@synchronous
async def test_a_bad_line_is_refused_and_wakes_nothing(tmp_path: Path, line: bytes) -> None:
    daemon = Daemonish()
    assert await daemon.control.start(tmp_path)
    try:
        with address(socket_path(tmp_path)) as name:
            reader, writer = await asyncio.open_unix_connection(name)
        writer.write(line)
        answer = await reader.readline()
        writer.close()
        assert answer.startswith(b'{"ok": false, "error": '), answer
        assert not daemon.woken
    finally:
        await daemon.control.close()
