"""SshTransport against a real OpenSSH sshd on 127.0.0.1: exit status and streams, POSIX sh,
ssh_config aliases, concurrency above MaxSessions, timeouts, host keys always verified, a server
that goes away and comes back, tied commands, and values too long for one argument. No mocks.
(LocalTransport: test_local.py; the pool that hands them out: test_pool.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from reconciler.errors import TransportError
from reconciler.remote.transport.base import Result, Transport
from reconciler.remote.transport.ssh import SshOptions, SshTransport
from tests.support.sshd import SshServer

T = TypeVar("T")
TIMEOUT = 20.0


def _options(server: SshServer, **overrides: object) -> SshOptions:
    values: dict[str, object] = {
        "identity_file": server.identity_file,
        "known_hosts": server.known_hosts,
        "connect_timeout": 10.0,
    }
    values.update(overrides)
    return SshOptions(**values)  # type: ignore[arg-type]


def _with(transport: Transport, body: Callable[[Transport], Awaitable[T]]) -> T:
    """Run `body(transport)` in a fresh event loop and always close the transport."""

    async def go() -> T:
        try:
            return await body(transport)
        finally:
            await transport.close()

    return asyncio.run(go())


def _run(transport: Transport, command: str, stdin: str | None = None, timeout: float = TIMEOUT) -> Result:
    return _with(transport, lambda t: t.run(command, timeout=timeout, stdin=stdin))


def _other_host_key(tmp: Path) -> str:
    key = tmp / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    key_type, key_b64 = Path(f"{key}.pub").read_text().split()[:2]
    return f"{key_type} {key_b64}"


# --- SshTransport: running commands ---------------------------------------------------------------------


def test_ssh_exit_status_stdout_stderr(sshd_session: SshServer) -> None:
    result = _run(SshTransport(sshd_session.destination, _options(sshd_session)), "echo out; echo err >&2; exit 3")
    assert result == Result(3, "out\n", "err\n")
    assert not result.ok


def test_ssh_success_and_quoting_reach_the_shell_intact(sshd_session: SshServer) -> None:
    command = "printf '%s|' 'a b' \"c'd\" '$HOME' \"x\\\"y\"; printf '\\n'\nprintf 'second line\\n'"
    result = _run(SshTransport(sshd_session.destination, _options(sshd_session)), command)
    assert result.ok, result
    assert result.stdout == "a b|c'd|$HOME|x\"y|\nsecond line\n"


def test_ssh_stdin_is_passed_through(sshd_session: SshServer) -> None:
    data = "hello\nwörld with 'quotes' and $dollars\n" * 100
    result = _run(SshTransport(sshd_session.destination, _options(sshd_session)), "cat", stdin=data)
    assert result == Result(0, data, "")
    # Without stdin the command reads end-of-file at once, it does not hang.
    result = _run(SshTransport(sshd_session.destination, _options(sshd_session)), "cat; echo done", timeout=10)
    assert result == Result(0, "done\n", "")


def test_ssh_commands_run_under_posix_sh_not_the_login_shell(sshd_session: SshServer) -> None:
    # The test user's login shell may be bash; the transport must run /bin/sh itself.
    result = _run(
        SshTransport(sshd_session.destination, _options(sshd_session)),
        'echo "$0"; readlink /proc/$$/exe',
    )
    assert result.ok, result
    zero, exe = result.stdout.splitlines()
    assert zero == "/bin/sh"
    assert exe == os.path.realpath("/bin/sh")


def test_ssh_config_host_alias(sshd_session: SshServer) -> None:
    transport = SshTransport("testserver", SshOptions(ssh_config=sshd_session.ssh_config, connect_timeout=10.0))
    result = _run(transport, "echo via-alias; id -un")
    assert result.ok, result
    assert result.stdout.splitlines() == ["via-alias", sshd_session.user]


def test_ssh_config_alias_with_explicit_known_hosts_and_identity(sshd_session: SshServer) -> None:
    transport = SshTransport("testserver", _options(sshd_session, ssh_config=sshd_session.ssh_config))
    assert _run(transport, "echo ok").stdout == "ok\n"


def test_ssh_many_concurrent_commands_on_one_transport(sshd_session: SshServer) -> None:
    # 25 overlapping sessions on one connection: above OpenSSH's MaxSessions 10 without a cap.
    async def body(transport: Transport) -> list[Result]:
        return list(await asyncio.gather(*(transport.run(f"sleep 0.3; echo {i}", timeout=60) for i in range(25))))

    transport = SshTransport(sshd_session.destination, _options(sshd_session))
    results = _with(transport, body)
    assert [r.exit_status for r in results] == [0] * 25, results
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(25)]


def test_ssh_timeout_raises_transport_error_and_the_transport_stays_usable(sshd_session: SshServer) -> None:
    async def body(transport: Transport) -> Result:
        with pytest.raises(TransportError, match="timed out"):
            await transport.run("sleep 30", timeout=1)
        return await transport.run("echo after", timeout=TIMEOUT)

    transport = SshTransport(sshd_session.destination, _options(sshd_session))
    assert _with(transport, body) == Result(0, "after\n", "")


# --- SshTransport: host keys are always verified ---------------------------------------------------------


def test_ssh_wrong_host_key_is_refused_and_nothing_runs(sshd_session: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd_session.port} {_other_host_key(tmp_path)}\n")
    canary = tmp_path / "CANARY"
    transport = SshTransport(sshd_session.destination, _options(sshd_session, known_hosts=known_hosts))
    with pytest.raises(TransportError, match=r"(?i)host key") as info:
        _run(transport, f"touch {canary}")
    assert sshd_session.destination in str(info.value)
    # The refusal names the key the server offered, as `ssh-keygen -l` prints it, for the operator to check.
    host_pub = sshd_session._dir / "ssh_host_ed25519_key.pub"
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(host_pub)], check=True,
                                 capture_output=True, text=True).stdout.split()[1]
    assert fingerprint in str(info.value)
    assert not canary.exists()


def test_ssh_empty_known_hosts_is_refused(sshd_session: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    canary = tmp_path / "CANARY"
    transport = SshTransport(sshd_session.destination, _options(sshd_session, known_hosts=known_hosts))
    with pytest.raises(TransportError, match=r"(?i)host key"):
        _run(transport, f"touch {canary}")
    assert not canary.exists()


def test_ssh_config_cannot_turn_host_key_checking_off(sshd_session: SshServer, tmp_path: Path) -> None:
    # OpenSSH: `UserKnownHostsFile none` means "no known hosts", so nothing can be verified and
    # StrictHostKeyChecking refuses. "Host keys are always verified" (SPEC 5) must hold here too.
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host unverified\n"
        f"  HostName {sshd_session.host}\n"
        f"  Port {sshd_session.port}\n"
        f"  User {sshd_session.user}\n"
        f"  IdentityFile {sshd_session.identity_file}\n"
        "  IdentitiesOnly yes\n"
        "  UserKnownHostsFile none\n"
        "  GlobalKnownHostsFile none\n"
        "  StrictHostKeyChecking yes\n"
    )
    canary = tmp_path / "CANARY"
    transport = SshTransport("unverified", SshOptions(ssh_config=config, connect_timeout=10.0))
    with pytest.raises(TransportError, match=r"(?i)host key"):
        _run(transport, f"touch {canary}")
    assert not canary.exists()


# --- SshTransport: a server that goes away and comes back -----------------------------------------------


def test_ssh_stopped_server_raises_transport_error_then_reconnects(sshd: SshServer) -> None:
    async def body(transport: Transport) -> list[object]:
        seen: list[object] = [await transport.run("echo up", timeout=TIMEOUT)]
        sshd.stop()
        for _ in range(2):  # the live connection drops, then a fresh connect is refused
            try:
                seen.append(await transport.run("echo down", timeout=TIMEOUT))
            except Exception as exc:
                seen.append(exc)
        sshd.restart()
        seen.append(await transport.run("echo again", timeout=TIMEOUT))
        return seen

    transport = SshTransport(sshd.destination, _options(sshd))
    up, down1, down2, again = _with(transport, body)
    assert up == Result(0, "up\n", "")
    for down in (down1, down2):
        assert isinstance(down, TransportError), f"expected TransportError, got {down!r}"
        assert sshd.destination in str(down)
    assert again == Result(0, "again\n", "")


def test_ssh_connection_lost_during_a_command_raises_transport_error(sshd: SshServer, tmp_path: Path) -> None:
    # A dropped connection is a temporary error (SPEC 4.6), never an exit status of the command:
    # a deploy script cut off by a lost connection must not be remembered as a failed build.
    started = tmp_path / "started"

    async def body(transport: Transport) -> tuple[object, Result]:
        running = asyncio.create_task(transport.run(f"touch {started}; sleep 10; echo finished", timeout=60))
        while not started.exists() and not running.done():
            await asyncio.sleep(0.02)
        sshd.stop()
        outcome: object
        try:
            outcome = await running
        except Exception as exc:
            outcome = exc
        sshd.start()
        return outcome, await transport.run("echo back", timeout=TIMEOUT)

    transport = SshTransport(sshd.destination, _options(sshd))
    outcome, back = _with(transport, body)
    assert isinstance(outcome, TransportError), f"expected TransportError, got {outcome!r}"
    assert back == Result(0, "back\n", "")


def test_ssh_unreachable_server_raises_transport_error(sshd: SshServer) -> None:
    sshd.stop()
    transport = SshTransport(sshd.destination, _options(sshd))
    with pytest.raises(TransportError) as info:
        _run(transport, "true")
    assert f"127.0.0.1:{sshd.port}" in str(info.value)


def test_a_tied_command_dies_with_its_connection(sshd: SshServer, tmp_path: Path) -> None:
    """Deploy steps run tied: when the reconciler's connection drops (it was killed), sshd hangs
    up the session and the step stops, instead of building on behind its back."""
    tied, plain = tmp_path / "tied", tmp_path / "plain"

    async def drop_during(transport: SshTransport, marker: Path, is_tied: bool) -> None:
        task = asyncio.create_task(transport.run(f"sleep 2; touch {marker}", timeout=30, tied=is_tied))
        await asyncio.sleep(0.8)
        assert transport._conn is not None
        transport._conn.abort()
        with pytest.raises(TransportError):
            await task
        await asyncio.sleep(2.5)

    asyncio.run(drop_during(SshTransport(sshd.destination, _options(sshd)), plain, False))
    asyncio.run(drop_during(SshTransport(sshd.destination, _options(sshd)), tied, True))
    assert plain.exists(), "control: an untied command outlives its connection"
    assert not tied.exists(), "a tied command must die with its connection"
    result = asyncio.run(SshTransport(sshd.destination, _options(sshd)).run("echo ok; exit 3", timeout=10, tied=True))
    assert (result.exit_status, result.stdout) == (3, "ok\n")


# --- Long values: stdin with a tied command, commands too long for one argument --------------------------


def test_ssh_a_tied_command_gets_its_stdin_exactly(sshd_session: SshServer) -> None:
    """A tied command runs on a terminal, which would echo stdin, cut it at 4 KiB a line and
    never end it. The transport stages stdin in a temp file first; the command reads that file,
    which is already unlinked while it runs."""
    data = ("it's $(touch PWNED) `x` \"q\"\ttab ünï ✓\n" * 1500) + "'" * 20_000 + "\nno final newline"
    transport = SshTransport(sshd_session.destination, _options(sshd_session))

    async def body(t: Transport) -> tuple[Result, Result, int]:
        before = t.round_trips
        copied = await t.run("cat; echo; echo end", stdin=data, timeout=TIMEOUT, tied=True)
        where = await t.run('readlink /proc/$$/fd/0; cat > /dev/null', stdin="x", timeout=TIMEOUT, tied=True)
        return copied, where, t.round_trips - before

    copied, where, trips = _with(transport, body)
    assert copied.exit_status == 0, copied
    assert copied.stdout == data + "\nend\n"
    assert trips == 4, "one staging round trip per tied command with stdin"
    assert where.stdout.strip().endswith("(deleted)"), where


def test_ssh_a_command_too_long_to_start_is_a_failure_not_a_lost_server(sshd_session: SshServer) -> None:
    """Quoted twice over SSH, 10 000 quotes are ~170 KB: sshd could not exec it (E2BIG), and a
    bigger one would make it drop the connection, which looked like an unreachable server and
    was retried forever. It is the command's own, permanent failure; the connection stays."""
    from reconciler.remote.protocol import seam

    async def body(t: Transport) -> list[Result]:
        return [await t.run(f"printf %s {seam.quote(chr(39) * n)} | wc -c", timeout=TIMEOUT)
                for n in (5_000, 10_000, 100_000)] + [await t.run("echo still here", timeout=TIMEOUT)]

    small, big, huge, after = _with(SshTransport(sshd_session.destination, _options(sshd_session)), body)
    assert (small.exit_status, small.stdout.strip()) == (0, "5000")
    for result in (big, huge):
        assert result.exit_status == seam.EXIT_CANNOT_RUN, result
        assert "too long" in result.stderr
    assert after == Result(0, "still here\n", "")


def test_ssh_a_60kb_script_deploys(sshd_session: SshServer, tmp_path: Path) -> None:
    """A valid 60 KB script of quotes deploys over SSH: quoted into argv twice it would be ~1 MB;
    it travels on stdin (claim step) and runs from a file in the release."""
    from reconciler.core.declarations import MAX_FILE_BYTES
    from reconciler.remote.protocol import site_steps
    from tests.support import make_app_repo, make_decl_repo, reconcile, settings_for, write_site

    domain = "big.example.com"
    script = ": " + "''" * 30_000 + "\nprintf 'ran [%s]\\n' \"$(cat)\" > script-ran\n"
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    site = write_site(decl, domain, server=sshd_session.destination, base_path=str(base), repository=str(app),
                      script=script)
    assert site.stat().st_size <= MAX_FILE_BYTES
    settings = settings_for(decl, tmp_path / "state", identity_file=sshd_session.identity_file,
                            known_hosts=sshd_session.known_hosts)
    outcome = reconcile(settings)[domain]
    assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome.message
    live = (base / domain).resolve()
    assert (live / "script-ran").read_text() == "ran []\n", "the script ran, with nothing on its stdin"
    assert not (live / site_steps.SCRIPT_NAME).exists()
    assert "+ :" in (live / "deployment.log").read_text()
