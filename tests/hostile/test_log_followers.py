"""Log streams whose client went away stop their remote reads (before, 15 killed curl clients
meant 150 remote commands in 10 s).

`GET /api/sites/D/deployments/N/log` follows a running deployment's log with one remote
`tail -c +OFFSET deployment.log | base64` a second. The old handler wrote only when new bytes
arrived, so while the log was silent it never noticed a client that had left: every dropped
client kept one remote command a second running until the deployment ended. Now the stream
asks, before every remote read, whether its client is still there (and writes a keepalive on
each silent poll), and ends the follower when it is not.

The daemon test counts the remote reads themselves: a `base64` wrapper first on the daemon's
PATH appends a line to a file each time it runs (the sites are on the local transport, so the
"remote" commands run here). It runs against another checkout with
RECONCILER_UNDER_TEST=/tmp/oldmain (tests/support/process.py), where it fails: the count
never stops growing while the deployment runs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from reconciler.engine import deploy_log
from reconciler.engine.deploy_log import follow_log
from reconciler.remote.transport.base import Result
from tests.support import Daemons, World, free_port
from tests.support.client import call
from tests.support.process import ROOT, check_code_under_test, code_under_test

DOMAIN = "shop.example.com"
TOKEN = "api-token-for-tests"
CLIENTS = 10
POLL = 1.0  # deploy_log.FOLLOW_EVERY: one remote read a second per follower
RUNNING = ("pending", "updating")


def old_code() -> bool:
    return code_under_test() != ROOT


# --- the daemon: dropped clients stop their remote reads ----------------------------------------------


class Followers:
    """Raw HTTP clients of one log stream: opened, then dropped without a word."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.open: list[socket.socket] = []

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                     f"Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"the server closed the log stream before answering: {head!r}"
            head += chunk
        status_line = head.split(b"\r\n", 1)[0]
        assert status_line.split()[1] == b"200", status_line
        self.open.append(sock)

    def drop(self) -> None:
        """Half of them reset the connection (a killed process, RST), half close it (FIN)."""
        for index, sock in enumerate(self.open):
            if index % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        self.open.clear()


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a bin dir holding a counting `base64`, the file it appends a line to per run)."""
    real = shutil.which("base64")
    assert real, "coreutils base64 is missing"
    bindir, calls = tmp_path / "bin", tmp_path / "base64-calls"
    bindir.mkdir()
    calls.touch()
    wrapper = bindir / "base64"
    # Log reads encode (`base64`); a deploy's build decodes its claim (`base64 -d`): not counted.
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -d "*) ;; *) echo x >> "{calls}" ;; esac\n'
                       f'exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    yield bindir, calls


def test_dropped_log_clients_stop_the_remote_reads(tmp_path: Path, daemons: Daemons,
                                                    counted: tuple[Path, Path]) -> None:
    bindir, calls_file = counted
    port = free_port()
    gate = tmp_path / "gate"
    world = World.create(tmp_path, daemons=daemons, domain=DOMAIN, interval=3600, listen=f"127.0.0.1:{port}",
                         api_token=TOKEN, allow_local=None if old_code() else True)
    if old_code():
        world.launcher.source = check_code_under_test()
    # A deployment that prints once, then stays silent until the test opens the gate.
    world.declare(DOMAIN, script=f"echo started\ntimeout 120 sh -c 'until [ -e {gate} ]; do sleep 0.1; done'\n")
    daemon = world.start_daemon(env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})

    def calls() -> int:
        return len(calls_file.read_text().splitlines())

    def running() -> dict[str, Any] | None:
        assert daemon.alive(), daemon.tail()
        rows = api(port, f"/api/sites/{DOMAIN}/deployments")
        return next((row for row in rows if row["status"] in RUNNING), None) if isinstance(rows, list) else None

    def settled() -> bool:
        """No remote read for three polls' time (a thing that must not happen, watched)."""
        before = calls()
        time.sleep(3 * POLL)
        return calls() == before

    try:
        deployment = world.wait(running, "the gated deployment to run")
        followers = Followers(port, f"/api/sites/{DOMAIN}/deployments/{deployment['id']}/log")
        assert calls() == 0, "something read a log before any client asked"

        for _ in range(CLIENTS):
            followers.connect()
        world.wait(lambda: calls() >= 2 * CLIENTS, f"{CLIENTS} followers to read the log (twice each)")
        followers.drop()
        world.wait(settled, "the remote reads to stop once every client is gone")
        assert running() is not None, "the deployment ended: that would stop the reads anyway, proving nothing"

        # Following still works for a client that stays, and stops when it leaves too.
        seen = calls()
        followers.connect()
        world.wait(lambda: calls() >= seen + 2, "a new follower to read the log")
        followers.drop()
        world.wait(settled, "the remote reads to stop once the last client is gone")
        assert running() is not None
        assert daemon.alive(), daemon.tail()
    finally:
        gate.touch()  # the script must not outlive the test
    world.wait(lambda: running() is None, "the deployment to finish once the gate is open")


def api(port: int, path: str) -> Any:
    """A read of the daemon's API with the token (these tests are not about authentication)."""
    return call(f"http://127.0.0.1:{port}{path}", token=TOKEN).json()  # an error's body is not a list


# --- follow_log itself ---------------------------------------------------------------------------------


class CountingTransport:
    """Answers every log read with nothing new, counting them."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, command: str, *, timeout: float, stdin: str | None = None) -> Result:
        assert "base64" in command, command
        self.runs += 1
        return Result(0, base64.b64encode(b"").decode(), "")


class OnePool:
    def __init__(self, transport: CountingTransport) -> None:
        self.transport = transport

    def get(self, server: str) -> CountingTransport:
        return self.transport


class RunningStore:
    """A deployment that never ends, on a site on server "web-1"."""

    row: ClassVar[dict[str, Any]] = {"id": 7, "site": DOMAIN, "status": "updating", "local_log": None,
           "log_file_path": "/srv/shop/deployments/r1/deployment.log", "deployment_path": "/srv/shop/deployments/r1"}

    def site(self, domain: str) -> dict[str, Any]:
        return {"domain": domain, "server": "web-1"}

    def deployment(self, ident: int) -> dict[str, Any]:
        return dict(self.row)


def test_follow_log_asks_gone_before_every_remote_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower runs no remote read once `gone()` is true, even while the log is silent; with
    `idle`, each silent poll yields "" so the caller gets a chance to write (and to notice)."""
    monkeypatch.setattr(deploy_log, "FOLLOW_EVERY", 0.0)
    transport = CountingTransport()
    store = RunningStore()

    async def go() -> tuple[list[str], int]:
        left = False
        chunks: list[str] = []
        generator = follow_log(store, OnePool(transport), dict(store.row), 10.0,  # type: ignore[arg-type]
                               gone=lambda: left, idle=True)
        async for chunk in generator:
            chunks.append(chunk)
            if len(chunks) == 3:
                left = True  # the client went away while the log was silent
        runs = transport.runs
        for _ in range(20):  # time passes: nothing else may run
            await asyncio.sleep(0)
        assert transport.runs == runs
        return chunks, runs

    chunks, runs = asyncio.run(go())
    assert chunks == ["", "", ""], chunks
    assert runs == 3, f"{runs} remote reads for 3 polls: one ran after the reader was gone"
