"""The daemon's control socket: `{state_dir}/control.sock`, owner-only, through which the
command line on the same host wakes the daemon at once (never waiting for the next poll) and,
for a pin or unpin it just committed, waits for the daemon's switch.

Its presence is also how the command line knows a daemon runs on this state directory: a
socket that answers is a daemon; none, or a stale one that refuses, is none (then the CLI
applies a pin itself, `engine.actions.apply_now`).

One request, one answer, each one line of JSON:

    {"wake": ["shop.example.com"], "landed": "<declarations commit>" | null, "wait": <seconds>}

`landed`: a pin or unpin commit just landed (the site takes the lock command's fast path, as
for any pin the watch sees); with `wait` > 0 the answer comes once a round of the site at that
commit has an outcome (a lock held by someone else is waited out; a temporary error is an
outcome), or after `wait` seconds. Answers: `{"ok": true}` (woken), `{"ok": true, "outcome":
{"sync", "health", "message", "live", "actions"}}`, `{"ok": true, "timeout": true}`, or
`{"ok": false, "error": "..."}`. Both sides read the other's line with this module's strict,
bounded parsers (`parse_request`, `parse_answer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core import wire
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import SiteOutcome

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 8 * 1024       # a request names a few domains; an answer carries one outcome
MAX_DOMAINS = 16
MAX_WAIT = 3600.0
READ_TIMEOUT = 5.0        # a client that connects and says nothing is dropped
_SHORT_PATH = 100         # sun_path holds 108 bytes: longer paths go through /proc/self/fd


class ControlError(ValueError):
    """A control line that is not what this protocol writes."""


@dataclass(frozen=True)
class Wake:
    """What a command line asks of the daemon."""

    domains: tuple[str, ...]
    landed: str | None = None  # a pin/unpin commit that just landed
    wait: float = 0.0          # seconds to wait for the outcome of a round at `landed`


@dataclass(frozen=True)
class Live:
    """A site's outcome as the control socket reports it (`live`: the active release after it)."""

    sync: str
    health: str
    message: str
    live: str | None
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    ok: bool
    outcome: Live | None = None
    timeout: bool = False
    error: str = ""


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@contextlib.contextmanager
def address(path: Path) -> Iterator[str]:
    """A name for `path` that fits in a Unix socket address (a deep state_dir does not):
    the path itself, or the same file through an open descriptor of its directory."""
    if len(os.fsencode(path)) < _SHORT_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# --- the wire: one strict reader each way ----------------------------------------------------

def _object(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ControlError(f"a control line is at most {MAX_LINE} bytes")
    try:
        return wire.decode_json_object(line.decode("utf-8"), max_bytes=MAX_LINE)
    except (UnicodeDecodeError, wire.WireError) as exc:
        raise ControlError(f"not a JSON object: {exc}") from None


def _domain(value: object) -> str:
    text = wire.as_str(value, 253)
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise ControlError("a domain is a printable string of at most 253 characters")
    return text


def encode_request(wake: Wake) -> bytes:
    return json.dumps({"wake": list(wake.domains), "landed": wake.landed, "wait": wake.wait}).encode() + b"\n"


def parse_request(line: bytes) -> Wake:
    """A command line's request, or ControlError."""
    body = _object(line)
    if set(body) - {"wake", "landed", "wait"}:
        raise ControlError("unknown keys: " + ", ".join(sorted(set(body) - {"wake", "landed", "wait"}))[:200])
    domains = body.get("wake")
    if not isinstance(domains, list) or not 0 < len(domains) <= MAX_DOMAINS:
        raise ControlError(f'"wake" is a list of 1 to {MAX_DOMAINS} domains')
    landed = body.get("landed")
    if landed is not None and wire.as_sha(landed) is None:
        raise ControlError('"landed" is a commit id (40 or 64 hex digits) or null')
    wait = wire.as_float(body.get("wait", 0), 0.0, MAX_WAIT)
    if wait is None:
        raise ControlError(f'"wait" is a number of seconds from 0 to {MAX_WAIT:.0f}')
    return Wake(tuple(_domain(d) for d in domains), landed, wait)


def encode_answer(answer: Answer) -> bytes:
    body: dict[str, Any] = {"ok": answer.ok}
    if answer.outcome is not None:
        o = answer.outcome
        body["outcome"] = {"sync": o.sync, "health": o.health, "message": o.message, "live": o.live,
                           "actions": list(o.actions)}
    if answer.timeout:
        body["timeout"] = True
    if answer.error:
        body["error"] = answer.error
    return json.dumps(body).encode() + b"\n"


def parse_answer(line: bytes) -> Answer:
    """The daemon's answer, or ControlError. Its text is made printable (it reaches a terminal)."""
    body = _object(line)
    ok = body.get("ok")
    if not isinstance(ok, bool):
        raise ControlError('"ok" is true or false')
    error = wire.as_str(body.get("error", ""), wire.MAX_TEXT)
    if error is None:
        raise ControlError('"error" is a string')
    timeout = body.get("timeout", False)
    if not isinstance(timeout, bool):
        raise ControlError('"timeout" is true or false')
    found = body.get("outcome")
    return Answer(ok, _live(found) if found is not None else None, timeout, wire.printable(error))


def _live(found: object) -> Live:
    if not isinstance(found, dict):
        raise ControlError('"outcome" is an object')
    sync, health = found.get("sync"), found.get("health")
    if sync not in {s.value for s in Sync} or health not in {h.value for h in Health}:
        raise ControlError('"outcome" has no known sync and health')
    message = wire.as_str(found.get("message", ""), wire.MAX_JSON_BYTES)
    live = found.get("live")
    actions = found.get("actions", [])
    if message is None or (live is not None and wire.as_str(live, 64) is None) or not isinstance(actions, list) \
            or any(wire.as_str(a, wire.MAX_JSON_BYTES) is None for a in actions):
        raise ControlError('"outcome" holds a field of the wrong type')
    return Live(str(sync), str(health), wire.printable(message),
                wire.printable(live) if isinstance(live, str) else None,
                tuple(wire.printable(a) for a in actions))


def live_of(outcome: SiteOutcome, live: str | None) -> Live:
    return Live(outcome.sync, outcome.health, outcome.message, live, tuple(outcome.actions))


# --- the daemon's side ---------------------------------------------------------------------------

class ControlSocket:
    """The daemon's listener. `woken` is told every request (it queues the sites and wakes the
    dispatcher, or says why it will not: a site of another shard); `settled` is called with
    every site outcome the daemon settles, and answers the requests waiting for it; `live`
    reads a site's active release (for the answer)."""

    def __init__(self, woken: Callable[[Wake], str | None], live: Callable[[str], str | None]) -> None:
        self.woken, self.live = woken, live
        self.path: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._waiting: dict[tuple[str, str], list[asyncio.Future[Live]]] = {}

    async def start(self, state_dir: Path) -> bool:
        """Listen on `{state_dir}/control.sock` (mode 0600). A socket another live daemon answers
        on is left alone (this one is then not reachable from the CLI: logged); a stale one is
        replaced. Never raises: the daemon runs without it, the CLI then waits for polls."""
        path = socket_path(state_dir)
        try:
            if await _answers(path):
                log.error("another daemon answers on %s: two daemons on one state_dir; this one has no "
                          "control socket", path)
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            spare = state_dir / f".control-{os.getpid()}.sock"
            with contextlib.suppress(FileNotFoundError):
                spare.unlink()
            with address(spare) as name:
                sock.bind(name)
            os.chmod(spare, 0o600)  # before it has its name: nobody else ever connects
            os.replace(spare, path)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE + 1)
        except OSError as exc:
            log.error("control socket %s: %s; the command line cannot wake this daemon", path, exc)
            return False
        self.path, self._inode = path, path.stat().st_ino
        return True

    def settled(self, domain: str, decl_commit: str | None, outcome: SiteOutcome) -> None:
        """A round's outcome: answer whoever waits for `domain` at `decl_commit`. A lock held by
        someone else (retry without backoff) is not an outcome yet: the site is looked at again."""
        if decl_commit is None or (outcome.retry_after is not None and not outcome.backoff):
            return
        waiters = self._waiting.pop((domain, decl_commit), [])
        if not waiters:
            return
        found = live_of(outcome, self.live(domain))
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(found)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.path is not None:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:  # still ours, not a newer daemon's
                    self.path.unlink()
        for waiters in self._waiting.values():
            for waiter in waiters:
                waiter.cancel()
        self._waiting.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                wake = parse_request(line)
            except (ControlError, ValueError, TimeoutError) as exc:
                writer.write(encode_answer(Answer(False, error=str(exc)[:wire.MAX_TEXT])))
                return
            writer.write(encode_answer(await self._answer(wake)))
        except Exception:
            log.exception("control socket: a request failed")
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()

    async def _answer(self, wake: Wake) -> Answer:
        if wake.landed is None or wake.wait <= 0:
            refused = self.woken(wake)
            return Answer(True) if refused is None else Answer(False, error=refused)
        # Registered before the wake: the round it causes cannot settle unseen.
        waiter: asyncio.Future[Live] = asyncio.get_running_loop().create_future()
        keys = [(domain, wake.landed) for domain in wake.domains]
        for key in keys:
            self._waiting.setdefault(key, []).append(waiter)
        try:
            refused = self.woken(wake)
            if refused is not None:
                return Answer(False, error=refused)
            return Answer(True, outcome=await asyncio.wait_for(waiter, wake.wait))
        except TimeoutError:
            return Answer(True, timeout=True)
        finally:
            for key in keys:
                left = [w for w in self._waiting.get(key, []) if w is not waiter]
                if left:
                    self._waiting[key] = left
                else:
                    self._waiting.pop(key, None)


async def _answers(path: Path) -> bool:
    """Something listens on `path` (a live daemon): connecting succeeds."""
    try:
        with address(path) as name:
            _, writer = await asyncio.open_unix_connection(name)
    except OSError:
        return False
    writer.close()
    return True
