"""SSH servers through asyncssh: one pooled connection per server, sessions capped below
OpenSSH's MaxSessions (10), keepalive, a timeout on every call, host keys always verified
(whatever the ssh_config says: see `_trusted_hosts`)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import asyncssh

from reconciler.errors import TransportError
from reconciler.remote.protocol import seam
from reconciler.remote.transport.base import Result, Transport
from reconciler.remote.transport.options import SshOptions

# OpenSSH's default MaxSessions is 10 channels per connection; stay well below it. sshd frees a
# finished session's slot a moment after it reports the exit, so with fast sessions (a plain
# login shell) a burst at 8 was seen refused ("open failed", measured with 25 concurrent
# commands: 2 runs in 4); at 6 none was in 12 runs. Each refusal used to cost the connection.
MAX_SESSIONS = 6
_DEST_RE = re.compile(r"^(?:(?P<user>[^@]+)@)?(?:\[(?P<ip6>[^\]]+)\]|(?P<host>[^:]+))(?::(?P<port>\d+))?$")


def parse_destination(server: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (IPv6 in brackets) -> (user, host, port). An alias is a bare host."""
    match = _DEST_RE.match(server)
    if not match:
        raise TransportError(f"{server}: not an SSH destination")
    port = match.group("port")
    return match.group("user"), match.group("ip6") or match.group("host"), int(port) if port else None


class _HostKeyWitness(asyncssh.SSHClient):
    """Never trusts a key known_hosts does not; only remembers what was offered, so the
    refusal can name the fingerprint for the operator to check."""

    def __init__(self) -> None:
        self.offered: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"
        return False


class SshTransport(Transport):
    def __init__(self, server: str, options: SshOptions) -> None:
        self.name = server
        self._options = options
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connecting = asyncio.Lock()
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)

    def _connect_kwargs(self) -> dict[str, Any]:
        user, host, port = parse_destination(self.name)
        opts = self._options
        kwargs: dict[str, Any] = {
            "host": host,
            "connect_timeout": opts.connect_timeout,
            "keepalive_interval": opts.keepalive_interval,
            "keepalive_count_max": 3,
        }
        if user:
            kwargs["username"] = user
        if port:
            kwargs["port"] = port
        if opts.identity_file is not None:
            kwargs["client_keys"] = [str(opts.identity_file)]
        # Never known_hosts=None: that would accept any host key.
        if opts.known_hosts is not None:
            kwargs["known_hosts"] = str(opts.known_hosts)
        if opts.ssh_config is not None:
            kwargs["config"] = [str(opts.ssh_config)]
        return kwargs

    async def _connection(self) -> asyncssh.SSHClientConnection:
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            kwargs = self._connect_kwargs()
            try:
                passes = await _resolved(kwargs)
                kwargs["known_hosts"], unverified = _trusted_hosts(kwargs, passes)
                await _check_jump_hosts(kwargs.get("config", ()), passes[-1].tunnel)
            except _VerificationOff as exc:
                raise TransportError(f"{self.name}: host key not verified: {exc}; nothing is ever "
                                     "auto-accepted: give it a known_hosts file") from None
            except (OSError, ValueError, asyncssh.Error) as exc:
                raise TransportError(f"{self.name}: cannot connect: {_reason(exc)}") from exc
            witness = _HostKeyWitness()
            try:
                self._conn, _ = await asyncssh.create_connection(lambda: witness, **kwargs)
            except asyncssh.HostKeyNotVerifiable as exc:
                offered = f" offered {witness.offered}" if witness.offered else ""
                raise TransportError(
                    f"{self.name}: host key not verified: the server{offered} is not in known_hosts "
                    f"({exc.reason}){unverified}; nothing is ever auto-accepted: check the fingerprint "
                    "and add it") from exc
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                raise TransportError(f"{self.name}: cannot connect: {_reason(exc)}") from exc
            return self._conn

    async def run(self, command: str, *, timeout: float, stdin: str | None = None,
                  tied: bool = False) -> Result:
        if tied and stdin is not None:
            # A tied command runs on a terminal, which would mangle stdin and never end it:
            # stage stdin in a temp file first (one more round trip), read it from there.
            started = asyncio.get_running_loop().time()
            staged = await self.run(seam.STAGE_STDIN.text, stdin=stdin, timeout=timeout)
            if not staged.ok:
                return staged
            command = seam.from_staged(staged.stdout.rstrip("\n"), command)
            stdin, timeout = None, max(1.0, timeout - (asyncio.get_running_loop().time() - started))
        self._round_trips += 1
        remote = seam.remote_line(command)
        if seam.too_long(remote):
            # sshd would fail to exec it (E2BIG), or drop the whole connection for an oversized
            # packet, which would look like a lost server and be retried forever. It is this
            # command's failure: report it as sh reports a command that cannot run.
            return Result(seam.EXIT_CANNOT_RUN, "",
                          f"{self.name}: command of {len(remote.encode())} bytes is too long for one "
                          f"argument ({seam.MAX_ARG_BYTES} bytes); not sent\n")
        conn = await self._connection()
        try:
            async with self._sessions:
                # sshd does not signal a plain session's processes when the connection drops;
                # with a terminal it hangs up the session, so a tied step dies with us.
                extra: dict[str, Any] = {"term_type": "dumb", "term_size": (200, 50)} if tied else {}
                done = await asyncio.wait_for(
                    # errors="replace": one undecodable byte (a ref name, a file) must not fail
                    # the whole command; parsers see U+FFFD and judge the datum itself.
                    conn.run(remote, check=False, input=stdin, errors="replace",
                             stdin=None if stdin is not None else asyncssh.DEVNULL, **extra),
                    timeout,
                )
        except TimeoutError as exc:
            raise TransportError(f"{self.name}: command timed out after {timeout:.0f}s") from exc
        except (OSError, asyncssh.Error) as exc:
            self._conn = None
            conn.abort()
            raise TransportError(f"{self.name}: connection lost: {_reason(exc)}") from exc
        status = done.exit_status
        if status is None and done.exit_signal is None:
            # The channel closed without an exit status: the connection went away mid-command.
            self._conn = None
            conn.abort()
            raise TransportError(f"{self.name}: connection lost while running a command")
        if status is None:
            status = 255 if done.exit_signal is None else 128
        out = _text(done.stdout)
        return Result(status, out.replace("\r\n", "\n") if tied else out, _text(done.stderr))

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None


# --- Host keys: asyncssh gets an explicit known-hosts set, never None -----------------------------------
#
# asyncssh takes `known_hosts=None` as "accept any host key", and so does it take an ssh_config's
# `UserKnownHostsFile none` (its only config form that turns verification off: it ignores
# `StrictHostKeyChecking`). The options are resolved here exactly as asyncssh resolves them for the
# connection (same kwargs, so `Match user/host/all/...` match alike, plus the `Match final` re-read
# asyncssh does before connecting), and the result is passed explicitly, which asyncssh then uses
# as is on every re-read. Falsy values have meanings of their own ([] and b"" fall back to
# ~/.ssh/known_hosts), so "trust nothing" is an empty SSHKnownHosts.

MAX_JUMPS = 8
_NOT_HONOURED = ("; the ssh_config's `UserKnownHostsFile none` is not honoured (to asyncssh it means "
                 "\"accept any host key\")")


class _VerificationOff(Exception):
    """An ssh_config turns host key verification off where it cannot be replaced (a jump host)."""


async def _resolved(kwargs: dict[str, Any]) -> list[asyncssh.SSHClientConnectionOptions]:
    """The options asyncssh would use for these kwargs: its first read of the config and, when the
    config has `Match final` or may canonicalize the host name, the re-read it does before connecting."""
    # As asyncssh.connect: without a `config` it reads ~/.ssh/config (the options' own default reads none).
    kwargs = {"config": (), **kwargs}
    first = await asyncssh.SSHClientConnectionOptions.construct(**kwargs)
    passes = [first]
    final = first.config.has_match_final()
    canonical = bool(first.canonicalize_hostname and first.canonical_domains)
    if final or canonical:
        passes.append(await asyncssh.SSHClientConnectionOptions.construct(
            **kwargs, reload=True, canonical=canonical, final=final))
    return passes


def _trusted_hosts(kwargs: dict[str, Any], passes: list[asyncssh.SSHClientConnectionOptions]) -> tuple[Any, str]:
    """The known-hosts set to pass to asyncssh for this connection, never None, and a note for the
    refusal when the ssh_config tried to turn verification off."""
    if kwargs.get("known_hosts") is not None:
        return kwargs["known_hosts"], ""  # the reconciler's own known_hosts file
    last = passes[-1]
    if any(options.known_hosts is None for options in passes):
        # OpenSSH reads no user known_hosts then, but still the global files: so do we.
        global_files = last.config.get("GlobalKnownHostsFile", None)
        if isinstance(global_files, list) and global_files:
            return list(global_files), _NOT_HONOURED
        return asyncssh.SSHKnownHosts(), _NOT_HONOURED
    if last.known_hosts:
        return last.known_hosts, ""
    default = Path("~", ".ssh", "known_hosts").expanduser()
    if default.is_file() and os.access(default, os.R_OK):
        return str(default), ""
    return asyncssh.SSHKnownHosts(), ""


async def _check_jump_hosts(config: object, tunnel: object) -> None:
    """A ProxyJump host is connected to by asyncssh itself, from the ssh_config alone: refuse when
    the config turns its host key verification off (its key is never checked otherwise)."""
    pending = [(hop, 0) for hop in _jumps(tunnel)]
    while pending:
        hop, depth = pending.pop()
        if depth >= MAX_JUMPS:
            raise ValueError(f"more than {MAX_JUMPS} nested jump hosts")
        user, host, port = hop
        hop_kwargs: dict[str, Any] = {"host": host, "config": config}
        if user:
            hop_kwargs["username"] = user
        if port:
            hop_kwargs["port"] = port
        passes = await _resolved(hop_kwargs)
        if any(options.known_hosts is None for options in passes):
            raise _VerificationOff(f"the ssh_config sets `UserKnownHostsFile none` for the jump host {host}, "
                                   "which would accept any host key there")
        pending.extend((nested, depth + 1) for nested in _jumps(passes[-1].tunnel))


def _jumps(tunnel: object) -> list[tuple[str | None, str, int | None]]:
    """The hops of a ProxyJump value (`[user@]host[:port]`, comma-separated), as asyncssh splits them."""
    if not isinstance(tunnel, str) or tunnel.lower() == "none":
        return []
    hops: list[tuple[str | None, str, int | None]] = []
    for hop in tunnel.split(","):
        user, _, host = hop.rpartition("@")
        host, colon, port = host.rpartition(":") if ":" in host else (host, "", "")
        hops.append((user or None, host, int(port) if colon and port.isdigit() else None))
    return hops


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__
