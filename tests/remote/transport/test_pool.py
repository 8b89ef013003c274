"""TransportPool: one transport per server, shared by every site on it (LocalTransport for
"local", only with the opt-in; SshTransport over a real sshd otherwise), its session cap and
round trips, and local-only use that never imports asyncssh."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from reconciler.core.declarations import LOCAL_REFUSED
from reconciler.errors import PermanentError
from reconciler.remote.transport.base import Result
from reconciler.remote.transport.local import LocalTransport
from reconciler.remote.transport.options import SshOptions
from reconciler.remote.transport.pool import TransportPool
from reconciler.remote.transport.ssh import MAX_SESSIONS, SshTransport
from tests.support.sshd import SshServer

TIMEOUT = 20.0


def _options(server: SshServer) -> SshOptions:
    return SshOptions(identity_file=server.identity_file, known_hosts=server.known_hosts, connect_timeout=10.0)


def test_the_pool_gives_one_transport_per_server_and_afresh_after_close(sshd_session: SshServer) -> None:
    pool = TransportPool(_options(sshd_session), allow_local=True)  # "local" needs the opt-in
    local = pool.get("local")
    assert isinstance(local, LocalTransport)
    assert pool.get("local") is local
    ssh = pool.get(sshd_session.destination)
    assert isinstance(ssh, SshTransport)
    assert pool.get(sshd_session.destination) is ssh
    other = pool.get(f"{sshd_session.user}@localhost:{sshd_session.port}")
    assert other is not ssh and isinstance(other, SshTransport)

    async def body() -> tuple[Result, Result]:
        try:
            return (await local.run("echo local", timeout=TIMEOUT), await ssh.run("echo remote", timeout=TIMEOUT))
        finally:
            await pool.close()

    assert asyncio.run(body()) == (Result(0, "local\n", ""), Result(0, "remote\n", ""))
    # After close the pool starts afresh.
    assert pool.get("local") is not local



def test_this_host_is_refused_without_the_opt_in() -> None:
    pool = TransportPool(SshOptions())
    with pytest.raises(PermanentError) as refused:
        pool.get("local")
    assert str(refused.value) == LOCAL_REFUSED
    assert isinstance(TransportPool(SshOptions(), allow_local=True).get("local"), LocalTransport)


def test_only_ssh_servers_have_a_session_cap() -> None:
    pool = TransportPool(SshOptions(), allow_local=True)
    assert pool.session_cap("local") is None
    assert pool.session_cap("deploy@web-1.example.com:2222") == MAX_SESSIONS
    assert pool._transports == {}, "asking for the cap opens nothing"


def test_round_trips_count_every_servers_commands_until_close() -> None:
    pool = TransportPool(SshOptions(), allow_local=True)

    async def body() -> int:
        local = pool.get("local")
        for _ in range(3):
            await local.run("true", timeout=TIMEOUT)
        pool.get("deploy@web-1.example.com")  # created, never used: no round trip
        trips = pool.round_trips
        await pool.close()
        return trips

    assert asyncio.run(body()) == 3
    assert pool.round_trips == 0, "a closed pool starts afresh"


def test_a_local_only_pool_never_imports_asyncssh() -> None:
    code = (
        "import asyncio, sys\n"
        "from reconciler.remote.transport.options import SshOptions\n"
        "from reconciler.remote.transport.pool import TransportPool\n"
        "pool = TransportPool(SshOptions(), allow_local=True)\n"
        "assert pool.session_cap('local') is None\n"
        "print(asyncio.run(pool.get('local').run('echo ran', timeout=20)).stdout, end='')\n"
        "print('asyncssh' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "ran\nFalse\n"), done.stderr
