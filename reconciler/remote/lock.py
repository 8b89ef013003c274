"""The per-site lock on the server: an atomic `mkdir` of deployments/{domain}/.reconciler-lock
holding an owner token. Two reconcilers pointed at the same servers never build or switch the
same site at once.

Only the owner releases it. A lock is stale, and taken over with a log line, when it is older
than the deploy timeout, or when it belongs to this instance (same state dir) but an earlier
run of it (a crash). Acquiring also probes the site again in the same command, so the plan is
re-made from facts no other reconciler can change while we hold the lock.

The commands are built by `remote.shell` (lock_acquire, lock_release, lock_takeover, unlock);
this module holds the protocol: who we are, who owns a lock, when it is stale.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from reconciler.core import wire
from reconciler.core.facts import ProbeSite, SiteFacts
from reconciler.core.layout import SitePaths
from reconciler.errors import LockNotReleased, SiteLocked, TemporaryError
from reconciler.remote import shell
from reconciler.remote.probe import parse_probe
from reconciler.remote.transport import Result, Transport

log = logging.getLogger("reconciler")

OWNER_FILE = shell.OWNER_FILE  # in the lock directory: the owner's JSON, one line
MAX_OWNER_TEXT = 1024  # characters of one owner field; ours are a few dozen
MAX_PID = 2**22        # PID_MAX_LIMIT on Linux
MAX_SINCE = 2.0**53    # seconds since the epoch: any real time, and exact as a float
# ASCII digits: "²".isdigit() is True
_HELD_RE = re.compile(re.escape(shell.LOCK_HELD) + r" ([0-9]{1,20}) ([0-9]{1,20})")


@dataclass(frozen=True)
class Identity:
    """Who we are: `instance` survives restarts (it lives in the state dir), `run` does not."""

    instance: str
    run: str
    host: str
    pid: int

    @classmethod
    def load(cls, state_dir: Path) -> Identity:
        path = state_dir / "instance-id"
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(8) + "\n")
        return cls(path.read_text().strip(), secrets.token_hex(8), socket.gethostname(), os.getpid())


@dataclass(frozen=True)
class Owner:
    instance: str
    run: str
    host: str
    pid: int
    purpose: str
    since: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> Owner | None:
        """The owner a lock's owner file names, or None when it does not name one. The file is
        server data: read through the bounded decoder, every field checked, strings escaped
        (`wire.printable`); nothing in it can raise."""
        try:
            data = wire.decode_json_object(text.strip())
        except wire.WireError:
            return None
        instance, run, host = (wire.as_str(data.get(key), MAX_OWNER_TEXT) for key in ("instance", "run", "host"))
        purpose = wire.as_str(data.get("purpose", ""), MAX_OWNER_TEXT)
        pid = wire.as_int(data.get("pid"), 1, MAX_PID)
        since = wire.as_float(data.get("since"), 0.0, MAX_SINCE)
        if instance is None or run is None or host is None or purpose is None or pid is None or since is None:
            return None
        return cls(wire.printable(instance), wire.printable(run), wire.printable(host), pid,
                   wire.printable(purpose), since)

    def describe(self) -> str:
        # Also for owners read from a server: escaped and bounded before any terminal sees them.
        return f"{wire.display(self.host, 255)} pid {self.pid} ({wire.display(self.purpose, 200) or 'reconciling'})"


@dataclass
class Lease:
    """Our hold on a site's lock, filled in by `held`, so that the last command sent under the
    lock can release it on its way (shell.finish_release, remove_releases): one round trip less
    per change (issue 15). `held` then only reports what that command said."""

    owner_json: str = ""
    script_staged: bool = False  # the deploy script waits in the lock (shell.lock_acquire)
    released: bool = False
    problem: str = ""  # released was asked, and the lock stayed: why
    # `held(activate=...)`: the switch's exit status when the lock command switched (0: done),
    # None when it did not try (the release was not there, not a success, or already live).
    switched: int | None = None

    def done(self, unlock_exit: int, result_tail: str = "") -> None:
        """The command that released the lock exited `unlock_exit` for that part."""
        self.released = True
        if unlock_exit == shell.EXIT_LOCK_KEPT:
            self.problem = f"could not remove its lock: {wire.display(result_tail)}; the site stays locked"
        elif unlock_exit != 0:
            self.problem = f"could not release the lock (exit {unlock_exit})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def left_by_dead_run(owner: Owner | None, me: Identity) -> bool:
    """The lock was taken by an earlier run of this instance (same state dir) that is gone.
    A live process of the same instance (the daemon while the CLI runs) still owns it."""
    if owner is None or owner.instance != me.instance or owner.run == me.run:
        return False
    return owner.host != me.host or not _alive(owner.pid)


def is_stale(owner: Owner | None, age: float, me: Identity, stale_after: float) -> bool:
    if age > stale_after:
        return True
    if owner is None:
        # mkdir happened but the owner file never made it (a crash in between): give it a minute.
        return age > 60
    return left_by_dead_run(owner, me)


async def _send(transport: Transport, command: shell.Command, timeout: float) -> Result:
    return await transport.run(command.text, stdin=command.stdin, timeout=timeout)


def _lock_age(line: str) -> float:
    """Seconds since the lock dir was made, from `LOCK_HELD <now> <mtime>`; 0 when unknown."""
    match = _HELD_RE.fullmatch(line)
    if match is None:
        return 0.0
    now, mtime = int(match.group(1)), int(match.group(2))
    return float(now - mtime) if mtime != 0 else 0.0


@asynccontextmanager
async def held(transport: Transport, paths: SitePaths, me: Identity, purpose: str, *,
               stale_after: float, timeout: float, shared: tuple[str, ...] = (),
               lease: Lease | None = None, script: str | None = None,
               activate: str | None = None, head: shell.HeadCheck | None = None) -> AsyncIterator[SiteFacts]:
    """Hold the site's lock; yields the site's facts probed right after acquiring it (with the
    live release's `shared` links checked). With a `lease`, a command under the lock may
    release it (`Lease.done`); with a `script`, the deploy script is staged in the lock; with
    `activate` (and a lease), the lock command switches to that release when it can
    (`shell.lock_acquire`; with `head`, only while it is the branch head's build), and
    `lease.switched` says how that went."""
    owner = Owner(me.instance, me.run, me.host, me.pid, purpose, time.time())
    site = ProbeSite(paths.domain, paths.base_path, shared)
    if lease is not None:
        lease.owner_json, lease.released, lease.problem, lease.switched = owner.to_json(), False, "", None
        lease.script_staged = script is not None
    for attempt in (1, 2):
        result = await _send(transport, shell.lock_acquire(paths, owner.to_json(), shared, script,
                                                           activate if lease is not None else None, head), timeout)
        if not result.ok:
            raise TemporaryError(f"{transport.name}: cannot take the lock of {paths.domain}: {result.tail(3)}")
        first, _, rest = result.stdout.partition("\n")
        if first == shell.LOCK_ACQUIRED:
            break
        current = Owner.from_text(rest.partition("\n")[0])
        age = _lock_age(first)
        if attempt == 1 and is_stale(current, age, me, stale_after):
            log.warning("%s: taking over a stale lock held by %s for %.0fs", paths.domain,
                        current.describe() if current else "an unknown owner", age)
            await _send(transport, shell.lock_takeover(paths), timeout)
            continue
        holder = current.describe() if current else "another reconciler"
        raise SiteLocked(f"{paths.domain} is locked by {holder}", delay=2.0)
    try:
        # Inside the try: output we cannot trust (TransportError) still releases the lock.
        if activate is not None and lease is not None:
            line, _, rest = rest.partition("\n")
            try:
                lease.switched = wire.switched(line, shell.SWITCHED)
            except wire.WireError as exc:
                raise TemporaryError(f"{transport.name}: the lock command about {paths.domain}: {exc}") from exc
        facts = parse_probe(rest, [site], []).sites[paths.domain]
        yield facts
    except BaseException:
        # Do not hide what went wrong inside behind a release problem: log that one.
        problem = await _release_unless_released(transport, paths, owner, timeout, lease)
        if problem:
            log.warning("%s: %s", paths.domain, problem)
        raise
    problem = await _release_unless_released(transport, paths, owner, timeout, lease)
    if problem:
        raise LockNotReleased(problem)


async def _release_unless_released(transport: Transport, paths: SitePaths, owner: Owner, timeout: float,
                                   lease: Lease | None) -> str:
    """`_release`, unless the last command under the lock released it already (`Lease.done`):
    then only what that command said."""
    if lease is not None and lease.released:
        return lease.problem
    return await _release(transport, paths, owner, timeout)


async def _release(transport: Transport, paths: SitePaths, owner: Owner, timeout: float) -> str:
    """Release our lock; returns why it is still there, or "" when it is gone (or not ours)."""
    try:
        result = await _send(transport, shell.lock_release(paths, owner.to_json()), timeout)
    except TemporaryError as exc:
        # A lock we could not release goes stale in time (deploy timeout) and is taken over.
        return f"could not release the lock: {exc}"
    if result.exit_status == shell.EXIT_LOCK_KEPT:
        return f"could not remove its lock {paths.lock}: {wire.display(result.tail(2))}; the site stays locked"
    return "" if result.ok else f"could not release the lock (exit {result.exit_status})"


async def unlock(transport: Transport, paths: SitePaths, timeout: float) -> str | None:
    """`reconciler unlock D`: remove the lock whoever holds it. Returns the owner it had."""
    result = await _send(transport, shell.unlock(paths), timeout)
    owner = Owner.from_text(result.stdout.strip())
    return owner.describe() if owner else (wire.display(result.stdout.strip()) or None)
