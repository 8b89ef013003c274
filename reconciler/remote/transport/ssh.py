"""SSH servers through asyncssh: one pooled connection per server, sessions capped below
OpenSSH's MaxSessions (10), keepalive, a timeout on every call, host keys always verified."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncssh

from reconciler.errors import TransportError
from reconciler.remote import shell
from reconciler.remote.transport.base import Result, Transport
from reconciler.remote.transport.options import SshOptions

# OpenSSH's default MaxSessions is 10 channels per connection; stay below it.
MAX_SESSIONS = 8
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
            if "known_hosts" not in kwargs:
                # An ssh_config may say `UserKnownHostsFile none`, which asyncssh takes as "do not
                # verify". Host keys are always verified: an empty list refuses every key instead.
                resolved = asyncssh.SSHClientConnectionOptions(host=kwargs["host"], config=kwargs.get("config", ()))
                if resolved.known_hosts is None:
                    kwargs["known_hosts"] = []
            witness = _HostKeyWitness()
            try:
                self._conn, _ = await asyncssh.create_connection(lambda: witness, **kwargs)
            except asyncssh.HostKeyNotVerifiable as exc:
                offered = f" offered {witness.offered}" if witness.offered else ""
                raise TransportError(
                    f"{self.name}: host key not verified: the server{offered} is not in known_hosts "
                    f"({exc.reason}); nothing is ever auto-accepted: check the fingerprint and add it") from exc
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                raise TransportError(f"{self.name}: cannot connect: {_reason(exc)}") from exc
            return self._conn

    async def run(self, command: str, *, timeout: float, stdin: str | None = None,
                  tied: bool = False) -> Result:
        if tied and stdin is not None:
            # A tied command runs on a terminal, which would mangle stdin and never end it:
            # stage stdin in a temp file first (one more round trip), read it from there.
            started = asyncio.get_running_loop().time()
            staged = await self.run(shell.STAGE_STDIN.text, stdin=stdin, timeout=timeout)
            if not staged.ok:
                return staged
            command = shell.from_staged(staged.stdout.rstrip("\n"), command)
            stdin, timeout = None, max(1.0, timeout - (asyncio.get_running_loop().time() - started))
        self._round_trips += 1
        remote = shell.remote_line(command)
        if shell.too_long(remote):
            # sshd would fail to exec it (E2BIG), or drop the whole connection for an oversized
            # packet, which would look like a lost server and be retried forever. It is this
            # command's failure: report it as sh reports a command that cannot run.
            return Result(shell.EXIT_CANNOT_RUN, "",
                          f"{self.name}: command of {len(remote.encode())} bytes is too long for one "
                          f"argument ({shell.MAX_ARG_BYTES} bytes); not sent\n")
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
