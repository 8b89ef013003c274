"""Prove the real-sshd fixture works with both the system ssh client and asyncssh."""

from __future__ import annotations

import asyncio
import re
import subprocess

import asyncssh
import pytest

from tests.support.sshd import SshServer  # the sshd / sshd_session fixtures come from tests/conftest.py


def _ssh_true(server: SshServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            "-F",
            str(server.ssh_config),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "testserver",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def _connect(server: SshServer) -> asyncssh.SSHClientConnection:
    # config=None / agent_path=None: ignore the developer's ~/.ssh and agent.
    return await asyncssh.connect(
        server.host,
        port=server.port,
        username=server.user,
        known_hosts=str(server.known_hosts),
        client_keys=[str(server.identity_file)],
        agent_path=None,
        config=None,
        connect_timeout=10,
    )


async def _echo_hi(server: SshServer) -> str:
    conn = await _connect(server)
    try:
        result = await conn.run("echo hi", check=True, timeout=10)
    finally:
        conn.close()
        await conn.wait_closed()
    return str(result.stdout)


def test_layout(sshd_session: SshServer) -> None:
    s = sshd_session
    assert s.host == "127.0.0.1" and s.is_running()
    assert s.destination == f"{s.user}@127.0.0.1:{s.port}"
    assert re.fullmatch(
        rf"\[127\.0\.0\.1\]:{s.port} ssh-ed25519 AAAA\S+\n", s.known_hosts.read_text()
    )
    assert "Host testserver" in s.ssh_config.read_text()


def test_system_ssh_client(sshd_session: SshServer) -> None:
    result = _ssh_true(sshd_session)
    assert result.returncode == 0, result.stderr


def test_asyncssh_echo(sshd_session: SshServer) -> None:
    assert asyncio.run(_echo_hi(sshd_session)) == "hi\n"


def test_stop_drops_and_refuses(sshd: SshServer) -> None:
    async def scenario() -> None:
        conn = await _connect(sshd)
        assert (await conn.run("echo hi", check=True)).stdout == "hi\n"
        sshd.stop()
        assert not sshd.is_running()
        # The established connection must be torn down by the server side.
        await asyncio.wait_for(conn.wait_closed(), timeout=10)
        with pytest.raises(OSError):  # ConnectionRefusedError: nothing listens
            await _connect(sshd)

    asyncio.run(scenario())
    assert _ssh_true(sshd).returncode != 0


def test_restart_keeps_port_and_host_key(sshd: SshServer) -> None:
    port = sshd.port
    sshd.stop()
    sshd.restart()
    assert sshd.is_running() and sshd.port == port
    # Strict host key checking passes, so the host key did not change.
    assert _ssh_true(sshd).returncode == 0
    assert asyncio.run(_echo_hi(sshd)) == "hi\n"
    sshd.restart()  # restart while running works too
    assert asyncio.run(_echo_hi(sshd)) == "hi\n"
