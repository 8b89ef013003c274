"""A client that leaves an event stream is the normal end of that stream.

In the operator trial every closed dashboard tab logged a full traceback in the daemon's log
("Error handling request", then aiohttp's ClientConnectionResetError "Cannot write to closing
transport" at the SSE keepalive): 52 of 69 lines of daemon.err, error-level noise in the journal
each time someone closed the page. Every stream writer now treats a client that went away
(ConnectionResetError, aiohttp's ClientConnectionResetError, BrokenPipeError, the handler
cancelled) as how streams end: at most a debug line.

Clients leave in every way a socket can: a reset (SO_LINGER 0, as a killed process or a
browser tearing down a tab), a plain close (FIN), and a half close (shutdown of the writing
side, the socket still open). Both streams are dropped mid-stream: /api/events after its first
snapshot, and the log of a deployment that is still running after its first output.

* The real application in this process, served as the daemon serves it (a real socket on
  127.0.0.1): every log record is seen (pytest's caplog, debug included), and a middleware of
  the test's notes when and how each handler ended. In "client-gone-between-check-and-write",
  the stream's "is the client still there" check always answers yes, as when the client leaves
  between that check and the write: every handler then writes to a connection that is gone, the
  very failure of the trial, and must end with one debug line and nothing else. In
  "handler-cancelled", aiohttp cancels the handler of a lost connection.
* The real daemon: its stderr, after the same drops and after a SIGTERM with streams still
  open, holds no traceback and no error line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.web import AppRunner, Request, SockSite, StreamResponse, middleware

from reconciler.engine import deploy_log
from reconciler.engine.converge import Reconciler, ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http import read_api as web
from reconciler.service.http.app import build_app
from reconciler.service.http.context import WebContext
from reconciler.service.metrics import PassStats
from tests.support import Daemons, World, free_port

DOMAIN = "shop.example.com"
TOKEN = "api-token-for-tests"
RUNNING = ("pending", "updating")
WAIT = 30.0  # bound for a deploy to start, a stream to answer, a handler to notice its client left
MODES = ("reset", "close", "half-close")


def gated(world: World, gate: Path) -> None:
    """Declare a site whose deploy prints once, then stays running until `gate` exists."""
    world.declare(DOMAIN, script=f"echo started\ntimeout 120 sh -c 'until [ -e {gate} ]; do sleep 0.1; done'\n")


def trouble(lines: list[str]) -> list[str]:
    """The lines a dropped client must never cause: tracebacks and errors of any kind."""
    return [line for line in lines if "Traceback" in line or "Error" in line or " ERROR " in line
            or "Exception" in line or "exception" in line]


# --- the client side: raw sockets, left abruptly ----------------------------------------------------


async def open_stream(port: int, path: str, until: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream client that has read the response head and at least `until`: mid-stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    seen = b""
    while until not in seen:
        chunk = await asyncio.wait_for(reader.read(65536), WAIT)
        assert chunk, f"{path}: the server ended the stream early: {seen[:300]!r}"
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
    return reader, writer


async def leave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
    """Drop the client: a reset (RST), a plain close (FIN), or a half close (our side shut, the
    socket still open; it is closed once the server has ended the stream)."""
    sock: socket.socket = writer.get_extra_info("socket")
    if mode == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    elif mode == "close":
        writer.close()
    else:
        writer.write_eof()
        await asyncio.wait_for(_drain_to_end(reader), WAIT)
        writer.close()


async def _drain_to_end(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


# --- the real application, in this process ----------------------------------------------------------


Ended = list[tuple[str, str]]  # (path, how: "returned", "raised <type>", "cancelled"), in order


def tracking(ended: Ended) -> Any:
    """An outermost middleware noting when each handler has ended, and how (the handler as the
    app runs it: the endpoint's own middlewares and the stream handler inside)."""

    @middleware
    async def track(request: Request, handler: Any) -> StreamResponse:
        how = "raised"
        try:
            response: StreamResponse = await handler(request)
            how = "returned"
            return response
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        except BaseException as exc:
            how = f"raised {type(exc).__name__}"
            raise
        finally:
            ended.append((request.path, how))

    return track


async def eventually(predicate: Callable[[], object], what: str) -> Any:
    """Poll `predicate` on the loop (the store belongs to it) until it is truthy; fail after WAIT."""
    try:
        async with asyncio.timeout(WAIT):
            while not (value := predicate()):
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {WAIT:.0f}s: {what}", pytrace=False)
    return value


def against_app(world: World, scenario: Callable[[int, Store], Awaitable[None]], ended: Ended,
                cancel: bool) -> None:
    """`scenario(port, store)` against the real app served as `web.serve` serves it (with the
    daemon's kind of context: a real Reconciler on the same store and pool) on 127.0.0.1; `ended`
    collects the handlers that end. With `cancel`, aiohttp cancels a handler whose connection is
    lost (as aiohttp's own test server does; the daemon does not)."""
    # The listening socket is made here, on a port the OS picks: no window in which another
    # process can take a port chosen in advance (the Host check needs the port in `listen`).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    settings = world.settings(api_token=TOKEN, listen=f"127.0.0.1:{port}")

    async def go() -> None:
        store = Store(settings.db_path)
        pool = TransportPool(ssh_options(settings), allow_local=True)
        reconciler = Reconciler(settings, store, pool)
        ctx = WebContext(lambda: settings, store, pool, PassStats(), lambda: None, lambda domains: None,
                         asyncio.Event(), reconciler)
        app = build_app(ctx)
        app.middlewares.insert(0, tracking(ended))
        runner = AppRunner(app, access_log=None, handler_cancellation=cancel, shutdown_timeout=2.0)
        await runner.setup()
        await SockSite(runner, listener).start()
        try:
            await scenario(port, store)
        finally:
            ctx.stopping.set()
            await runner.cleanup()
            await pool.close()
            store.close()

    asyncio.run(go())


@pytest.mark.parametrize("how", ["as-is", "client-gone-between-check-and-write", "handler-cancelled"])
def test_dropped_stream_clients_are_quiet_in_the_app(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """as-is: the daemon's settings. client-gone-between-check-and-write: the stream's check for
    its client always answers "still there", so every stream writes to a connection that is gone
    (the trial's failure) and must end quietly. handler-cancelled: aiohttp cancels the handler of
    a lost connection (handler_cancellation, as aiohttp's own test server does)."""
    world = World.create(tmp_path, domain=DOMAIN)
    gate = tmp_path / "gate"
    gated(world, gate)
    # Quick polls and keepalives: a dropped stream's next write comes at once.
    monkeypatch.setattr(web, "POLL", 0.05)
    monkeypatch.setattr(web, "HEARTBEAT", 2)
    monkeypatch.setattr(deploy_log, "FOLLOW_EVERY", 0.05)
    if how == "client-gone-between-check-and-write":
        monkeypatch.setattr(web, "_closed", lambda request: False)
    Store(world.settings().db_path).close()  # created (migrated) before two connections share it
    deploying = threading.Thread(target=world.reconcile_in_process, daemon=True)
    deploying.start()
    caplog.set_level(logging.DEBUG)

    ended: Ended = []

    def finished(path: str, count: int) -> bool:
        return sum(1 for p, _ in ended if p == path) >= count

    async def scenario(port: int, store: Store) -> None:
        def running() -> int | None:
            return next((row["id"] for row in store.deployments(DOMAIN) if row["status"] in RUNNING), None)

        number = await eventually(running, "the gated deployment to start")
        streams = {"/api/events": b"event: snapshot", f"/api/sites/{DOMAIN}/deployments/{number}/log": b"started"}
        caplog.clear()
        for path, until in streams.items():
            for count, mode in enumerate(MODES, 1):
                reader, writer = await open_stream(port, path, until)
                await leave(reader, writer, mode)
                await eventually(functools.partial(finished, path, count), f"the handler of {path} to end ({mode})")
        dropped = len(streams) * len(MODES)
        # Each handler ended as a stream ends: it returned, or it was cancelled when aiohttp cancels.
        endings = {"returned", "cancelled"} if how == "handler-cancelled" else {"returned"}
        assert len(ended) == dropped and {ending for _, ending in ended} <= endings, ended
        records = list(caplog.records)
        loud = [r for r in records if r.levelno >= logging.WARNING or r.exc_info]
        assert not loud, [f"{r.name} {r.levelname} {r.getMessage()}" for r in loud]
        text = [r.getMessage() for r in records if r.levelno > logging.DEBUG]
        assert not trouble(text), trouble(text)
        ours = [r for r in records if r.name == web.__name__]
        assert all(r.levelno == logging.DEBUG for r in ours), [r.getMessage() for r in ours]
        went_away = [r for r in ours if "went away" in r.getMessage()]
        if how == "client-gone-between-check-and-write":
            # Every handler wrote to a client that was gone (the trial's failure) and ended quietly.
            assert len(went_away) == dropped, [r.getMessage() for r in records]

    try:
        against_app(world, scenario, ended, cancel=how == "handler-cancelled")
    finally:
        gate.touch()
        deploying.join(WAIT)


# --- the real daemon ------------------------------------------------------------------------------------


def blocking_stream(port: int, path: str, until: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    seen = b""
    while until not in seen:
        chunk = sock.recv(65536)
        assert chunk, f"{path}: the server ended the stream early: {seen[:300]!r}"
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
    return sock


def drop(sock: socket.socket, mode: str) -> None:
    if mode == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    elif mode == "close":
        sock.close()
    else:
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # until the server ends the stream
            pass
        sock.close()


def keepalives(sock: socket.socket, count: int) -> None:
    """Read until `count` keepalive comments arrived: that many idle polls of this stream."""
    seen = b""
    while seen.count(b": keepalive") < count:
        chunk = sock.recv(65536)
        assert chunk, f"the stream ended: {seen[-300:]!r}"
        seen += chunk


def test_dropped_stream_clients_leave_no_traceback_in_the_daemon_log(tmp_path: Path, daemons: Daemons) -> None:
    port = free_port()
    gate = tmp_path / "gate"
    world = World.create(tmp_path, daemons=daemons, domain=DOMAIN, interval=3600, listen=f"127.0.0.1:{port}",
                         api_token=TOKEN)
    gated(world, gate)
    daemon = world.start_daemon()

    def running() -> int | None:
        assert daemon.alive(), daemon.tail()
        store = Store(world.settings().db_path)
        try:
            return next((row["id"] for row in store.deployments(DOMAIN) if row["status"] in RUNNING), None)
        finally:
            store.close()

    number = world.wait(running, "the gated deployment to start")
    log_path = f"/api/sites/{DOMAIN}/deployments/{number}/log"
    streams = {"/api/events": b"event: snapshot", log_path: b"started"}
    try:
        for path, until in streams.items():
            for mode in MODES:
                drop(blocking_stream(port, path, until), mode)
        # Streams opened after the drops, once they have seen idle polls, prove the dropped ones had
        # as many (every stream polls at the same pace): each noticed its client was gone, or wrote
        # to it and failed. Keepalives: every 20 polls on /api/events, every poll on a log.
        for path, until, count in (("/api/events", b"event: snapshot", 2), (log_path, b"started", 3)):
            witness = blocking_stream(port, path, until)
            keepalives(witness, count)
            drop(witness, "reset")
        assert daemon.alive(), daemon.tail()
        # Stopping with streams open: their handlers are ended (the event stream) or cancelled (the log).
        open_ones = [blocking_stream(port, path, until) for path, until in streams.items()]
        assert daemon.stop() == 0, daemon.tail()
        for sock in open_ones:
            sock.close()
    finally:
        gate.touch()
    lines = daemon.output().splitlines()
    assert lines and "stopped" in lines[-1], daemon.tail()
    assert not trouble(lines), "\n".join(lines)
