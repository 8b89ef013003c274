"""The per-site lock on the server: an atomic `mkdir` of deployments/{domain}/.reconciler-lock
holding an owner token. Two reconcilers pointed at the same servers never build or switch the
same site at once.

Only the owner releases it. The owner keeps it fresh while it holds it (the heartbeat, below):
a lock is stale, and taken over with a log line, when its heartbeat is older than `stale_bound`,
or when it belongs to this instance (same state dir) but an earlier run of it (a crash) and no
command of that run still heartbeats it on the server. Acquiring also probes the site again in
the same command, so the plan is re-made from facts no other reconciler can change while we
hold the lock.

The heartbeat (a lock measured from its `mkdir` was "stale" while a long
but legitimate deploy still ran, and a second reconciler deleted the release under its script).
The lock dir's mtime is the heartbeat, refreshed from two places:

* The long steps (the build, the deploy script, `script_once`: up to `deploy_timeout` each)
  refresh it from inside their own command on the server (`locking.beating`): a background loop
  that touches the lock every interval while that command's shell lives. It costs no round trip,
  so a fast deploy sends the same commands as before, and it proves what matters to a taker: a
  process on the server is still building in the release. It also outlives its reconciler when
  the command does: over SSH a tied step dies with the connection (its terminal hangs up), but
  a local command, or a script that ignores the hang-up, runs on; while it runs, the lock is
  legitimately live (another reconciler must not delete the release under it), and it stops
  with the command, or at the step's own timeout (`Beat.limit`): nothing hung holds a site for
  ever. Its shell's PID is in the lock, so a restarted run of the same instance sees that a
  command of its dead predecessor still runs (`lock_acquire`'s LOCK_BEATING) and waits too.
* Between and around them (the finish, a health check, a many-server build waiting for its
  other servers), a task of `held` sends `locking.lock_refresh` an interval after the lock was
  last known fresh (taken, a long step's end, a refresh), never while a long step beats: only a
  stretch of an interval without one costs a command (a fast deploy sends what it always did),
  and the session cap of a connection full of long builds never delays a refresh the builds
  already do.

Either alone falls short: a task alone proves only that the reconciler lives, costs a command
per interval through the longest steps, and waits for a session behind the very builds that
fill a connection; the long steps alone leave a lock unrefreshed while its holder waits between
them.

A live owner's lock is then never older than two intervals and one command timeout (a step
killed by its timeout touched it up to an interval before its end, the task waits an interval,
and its refresh may take up to `command_timeout`); `stale_bound` leaves two more intervals.
When the owner dies (reconciler killed), its task stops with it and its tied commands with
their connection, so the heartbeat stops and the lock goes stale.

The commands are built by `remote/protocol/locking.py` (lock_acquire, lock_release, lock_takeover, unlock);
this module holds the protocol: who we are, who owns a lock, when it is stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from reconciler.core import wire
from reconciler.core.facts import ProbeSite, SiteFacts
from reconciler.core.layout import SitePaths
from reconciler.core.plan import Takeover
from reconciler.errors import LockNotReleased, SiteLocked, TemporaryError
from reconciler.remote.protocol import locking, seam, site_steps
from reconciler.remote.protocol.probing import parse_probe
from reconciler.remote.transport import Result, Transport

log = logging.getLogger("reconciler")

OWNER_FILE = site_steps.OWNER_FILE  # in the lock directory: the owner's JSON, one line
MAX_OWNER_TEXT = 1024  # characters of one owner field; ours are a few dozen
MAX_PID = 2**22        # PID_MAX_LIMIT on Linux
MAX_SINCE = 2.0**53    # seconds since the epoch: any real time, and exact as a float
# ASCII digits: "²".isdigit() is True

# The heartbeat: an interval of a quarter command timeout (whole seconds: POSIX `sleep`), and a
# lock is stale after STALE_BEATS intervals and one command timeout (see the module's text).
STALE_BEATS = 4


def heartbeat_interval(command_timeout: float) -> int:
    """Seconds between two refreshes of a held lock."""
    return max(1, int(command_timeout // 4))


def stale_bound(command_timeout: float) -> float:
    """Seconds after its last heartbeat when a lock is stale: a live owner refreshes it at least
    every 2 intervals + 1 command timeout; this leaves two intervals to spare."""
    return STALE_BEATS * heartbeat_interval(command_timeout) + command_timeout


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
    lock can release it on its way (finishing.finish_release, remove_releases): one round trip less
    per change. `held` then only reports what that command said."""

    owner_json: str = ""
    script_staged: bool = False  # the deploy script waits in the lock (locking.lock_acquire)
    released: bool = False
    problem: str = ""  # released was asked, and the lock stayed: why
    # `held(activate=...)`: the switch's exit status when the lock command switched (0: done),
    # None when it did not try (the release was not there, not a success, or already live).
    switched: int | None = None
    # The lock was taken over from another owner, not found free: what we knew of it (the
    # planner leaves that owner's half-built releases alone while it may live: core.plan).
    takeover: Takeover | None = None
    # The heartbeat (`held(heartbeat=...)`): the lock's path and the interval, 0 without one;
    # `beating` counts the long steps in flight that refresh the lock themselves (`beat`).
    lock_path: str = ""
    heartbeat: int = 0
    beating: int = 0
    touched: float = 0.0  # when the lock was last known fresh (time.monotonic())

    @contextmanager
    def beat(self, timeout: float) -> Iterator[locking.Beat | None]:
        """For a long step of `timeout` seconds under the lock: the heartbeat its command carries
        (`locking.beating`; None without a heartbeat), and the task of `held` stays quiet meanwhile."""
        if not self.heartbeat or self.released:
            yield None
            return
        self.beating += 1
        try:
            yield locking.Beat(self.lock_path, self.owner_json, self.heartbeat, int(timeout) + 1)
        finally:
            self.beating -= 1
            # The step touched the lock as it ended (its EXIT trap), or at most an interval
            # before when it was killed (the bound allows for that).
            self.touched = time.monotonic()

    def done(self, unlock_exit: int, result_tail: str = "") -> None:
        """The command that released the lock exited `unlock_exit` for that part."""
        self.released = True
        self.problem = release_problem(unlock_exit, result_tail, self.lock_path)


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


def is_stale(owner: Owner | None, age: float, me: Identity, stale_after: float, beating: bool = False) -> bool:
    """`age`: seconds since the lock's last heartbeat; `beating`: a command that heartbeats it
    still runs on the server."""
    if age > stale_after:
        return True
    if owner is None:
        # mkdir happened but the owner file never made it (a crash in between): give it a minute.
        return age > 60
    # A dead run's command may still build on the server (a local command outlives its
    # reconciler): its release is not ours to delete until it stops.
    return left_by_dead_run(owner, me) and not beating


async def _send(transport: Transport, command: seam.Command, timeout: float) -> Result:
    return await transport.run(command.text, stdin=command.stdin, timeout=timeout)


@asynccontextmanager
async def held(transport: Transport, paths: SitePaths, me: Identity, purpose: str, *,
               stale_after: float, timeout: float, shared: tuple[str, ...] = (),
               lease: Lease | None = None, script: str | None = None,
               activate: str | None = None, head: locking.HeadCheck | None = None,
               heartbeat: int = 0, env: bool = False) -> AsyncIterator[SiteFacts]:
    """Hold the site's lock; yields the site's facts probed right after acquiring it (with the
    live release's `shared` links checked). With a `lease`, a command under the lock may
    release it (`Lease.done`); with a `script`, the deploy script is staged in the lock; with
    `activate` (and a lease), the lock command switches to that release when it can
    (`locking.lock_acquire`; with `head`, only while it is the branch head's build), and
    `lease.switched` says how that went. With a `heartbeat` (seconds), the lock is kept fresh
    while it is held (the module's text); `lease.takeover` says whether it was taken over."""
    owner = Owner(me.instance, me.run, me.host, me.pid, purpose, time.time())
    site = ProbeSite(paths.domain, paths.base_path, shared, env)
    given = lease
    lease = lease if lease is not None else Lease()
    lease.owner_json, lease.released, lease.problem, lease.switched = owner.to_json(), False, "", None
    lease.script_staged = script is not None
    lease.takeover, lease.lock_path, lease.heartbeat, lease.beating = None, paths.lock, heartbeat, 0
    for attempt in (1, 2):
        result = await _send(transport, locking.lock_acquire(paths, owner.to_json(), shared, script,
                                                           activate if given is not None else None, head, env), timeout)
        if not result.ok:
            raise TemporaryError(f"{transport.name}: cannot take the lock of {paths.domain}: {result.tail(3)}")
        first, _, rest = result.stdout.partition("\n")
        if first == locking.LOCK_ACQUIRED:
            break
        current = Owner.from_text(rest.partition("\n")[0])
        age, beating = locking.held_age(first), locking.still_beating(rest)
        if attempt == 1 and is_stale(current, age, me, stale_after, beating):
            log.warning("%s: taking over a stale lock held by %s, last refreshed %.0fs ago", paths.domain,
                        current.describe() if current else "an unknown owner", age)
            gone = current is not None and left_by_dead_run(current, me) and not beating
            lease.takeover = Takeover(age, stale_after, gone)
            await _send(transport, locking.lock_takeover(paths), timeout)
            continue
        holder = current.describe() if current else "another reconciler"
        still = "; a command of it still runs on the server" if beating else ""
        raise SiteLocked(f"{paths.domain} is locked by {holder}{still}", delay=2.0)
    lease.touched = time.monotonic()
    refresher = asyncio.ensure_future(_refresh(transport, paths, lease, timeout)) if heartbeat else None
    try:
        # Inside the try: output we cannot trust (TransportError) still releases the lock.
        if activate is not None and given is not None:
            line, _, rest = rest.partition("\n")
            try:
                lease.switched = locking.switched(line)
            except wire.WireError as exc:
                raise TemporaryError(f"{transport.name}: the lock command about {paths.domain}: {exc}") from exc
        facts = parse_probe(rest, [site], []).sites[paths.domain]
        yield facts
    except BaseException:
        await _stop(refresher)
        # Do not hide what went wrong inside behind a release problem: log that one.
        problem = await _release_unless_released(transport, paths, owner, timeout, given)
        if problem:
            log.warning("%s: %s", paths.domain, problem)
        raise
    await _stop(refresher)
    problem = await _release_unless_released(transport, paths, owner, timeout, given)
    if problem:
        raise LockNotReleased(problem)


async def _refresh(transport: Transport, paths: SitePaths, lease: Lease, timeout: float) -> None:
    """The heartbeat of a held lock between long steps (the module's text): touch the lock while
    it is ours, an interval after it was last known fresh, unless a long step refreshes it
    itself. A refresh that fails is tried again an interval later; a lock found no longer ours
    ends it."""
    while True:
        due = lease.touched + lease.heartbeat - time.monotonic()
        if lease.beating or due > 0:
            await asyncio.sleep(due if due > 0 else lease.heartbeat)
            continue
        if lease.released:
            return
        lease.touched = time.monotonic()
        try:
            result = await _send(transport, locking.lock_refresh(paths, lease.owner_json), timeout)
        except TemporaryError as exc:
            log.info("%s: could not refresh the lock: %s", paths.domain, exc)
            continue
        if result.exit_status == locking.EXIT_LOCK_LOST and not lease.released:
            log.warning("%s: the lock is no longer ours (taken over, or removed by hand)", paths.domain)
            return


async def _stop(task: asyncio.Future[None] | None) -> None:
    """End the heartbeat task. `asyncio.wait` raises nothing of the task's own, and still lets
    a cancellation of ours through."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.warning("the lock's heartbeat stopped: %r", task.exception())


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
        result = await _send(transport, locking.lock_release(paths, owner.to_json()), timeout)
    except TemporaryError as exc:
        # A lock we could not release goes stale in time (deploy timeout) and is taken over.
        return f"could not release the lock: {exc}"
    return release_problem(result.exit_status, result.tail(2), paths.lock)


def release_problem(unlock_exit: int, tail: str, lock_path: str) -> str:
    """What the release part of a command (`lock_release`, or a last step's `release_if_ours`)
    said by its exit: "" when the lock is gone (or was not ours), else why it is still there."""
    if unlock_exit == seam.EXIT_LOCK_KEPT:
        return f"could not remove its lock {lock_path}: {wire.display(tail)}; the site stays locked"
    return "" if unlock_exit == 0 else f"could not release the lock (exit {unlock_exit})"


async def unlock(transport: Transport, paths: SitePaths, timeout: float) -> str | None:
    """`reconciler unlock D`: remove the lock whoever holds it. Returns the owner it had."""
    result = await _send(transport, locking.unlock(paths), timeout)
    owner = Owner.from_text(result.stdout.strip())
    return owner.describe() if owner else (wire.display(result.stdout.strip()) or None)
