"""The `sshd_pair` fixture (tests/support/sshd.py): two real sshds on 127.0.0.1, each in its own mount
namespace, so ONE base_path is TWO filesystems, as on two machines. Everything here goes over
real SSH (the product's SshTransport, or the OpenSSH client): what a session on server A writes
at base_path lands in A's directory only, each server shows its own host key, one client setup
reaches both, and stopping the pair leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from reconciler.core.layout import SitePaths
from reconciler.remote.protocol import site_steps
from reconciler.remote.transport.base import Result
from reconciler.remote.transport.options import SshOptions
from reconciler.remote.transport.ssh import SshTransport
from tests.support.remote import run_once
from tests.support.sshd import ServerPair, SshServer, _descendants

DOMAIN = "multi.example.com"
RELEASE = "01082025-091245"
TIMEOUT = 20.0


def _run(pair: ServerPair, server: SshServer, command: str) -> Result:
    """`command` on `server` over real SSH, with the pair's ONE client setup (identity, known_hosts),
    as one reconciler config would reach every server."""
    transport = SshTransport(server.destination, SshOptions(identity_file=pair.identity_file,
                                                            known_hosts=pair.known_hosts, connect_timeout=10.0))
    return run_once(transport, command, TIMEOUT)


def _ok(pair: ServerPair, server: SshServer, command: str) -> str:
    result = _run(pair, server, command)
    assert result.ok, (server, command, result)
    return result.stdout


def test_one_base_path_is_a_different_directory_on_each_server(sshd_pair: ServerPair) -> None:
    a, b = sshd_pair.servers
    base = sshd_pair.base_path
    assert sshd_pair.dir_of(a) != sshd_pair.dir_of(b)

    _ok(sshd_pair, a, f"printf 'from A' > {base}/x")
    assert (sshd_pair.dir_of(a) / "x").read_text() == "from A"
    assert not (sshd_pair.dir_of(b) / "x").exists()
    assert _run(sshd_pair, b, f"cat {base}/x").exit_status != 0  # B's sessions do not see it

    _ok(sshd_pair, b, f"printf 'from B' > {base}/x; mkdir {base}/only-b")
    assert (sshd_pair.dir_of(b) / "x").read_text() == "from B"
    assert (sshd_pair.dir_of(a) / "x").read_text() == "from A"
    assert _ok(sshd_pair, a, f"cat {base}/x; ls {base}") == "from Ax\n"
    assert _ok(sshd_pair, b, f"cat {base}/x; ls {base}") == "from Bonly-b\nx\n"

    # The mount point itself, in this process's namespace, is untouched and empty.
    assert os.listdir(base) == []
    assert not os.path.ismount(base)


def test_a_site_switched_on_one_server_reads_through_site_on_disk(sshd_pair: ServerPair) -> None:
    """The product's own switch command, over SSH to A only: SiteOnDisk on A's real directory sees
    the live release, on B's sees no site at all."""
    a, b = sshd_pair.servers
    paths = SitePaths(sshd_pair.base_path, DOMAIN)
    _ok(sshd_pair, a, f"mkdir -p {paths.release(RELEASE)}/public")
    _ok(sshd_pair, a, site_steps.switch(paths, RELEASE).text)

    assert sshd_pair.site(a, DOMAIN).active() == RELEASE
    assert sshd_pair.site(a, DOMAIN).releases() == [RELEASE]
    assert sshd_pair.site(b, DOMAIN).active() is None
    assert sshd_pair.site(b, DOMAIN).releases() == []
    assert _run(sshd_pair, b, f"test -e {paths.site_link}").exit_status == 1


def _offered_key(server: SshServer) -> str:
    """The host key `server` presents on the wire (ssh-keyscan), as 'type base64'."""
    done = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(server.port), server.host],
                          capture_output=True, text=True, timeout=30, check=True)
    keys = [line.split()[1:3] for line in done.stdout.splitlines() if line and not line.startswith("#")]
    assert len(keys) == 1, done
    return " ".join(keys[0])


def _fingerprint(public_key: str) -> str:
    done = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=public_key + "\n", capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout.split()[1]


def test_each_server_has_its_own_host_key(sshd_pair: ServerPair) -> None:
    a, b = sshd_pair.servers
    offered = {server: _offered_key(server) for server in (a, b)}
    for server in (a, b):
        assert offered[server] == " ".join(Path(f"{server.host_key}.pub").read_text().split()[:2])
    assert _fingerprint(offered[a]) != _fingerprint(offered[b])

    # Each port is pinned to its own key: the shared known_hosts names both, one line each.
    lines = sshd_pair.known_hosts.read_text().splitlines()
    assert sorted(lines) == sorted(f"[{s.host}]:{s.port} {offered[s]}" for s in (a, b))
    # The OpenSSH client with each server's own ssh_config (strict host key checking) gets in too.
    for server in (a, b):
        done = subprocess.run(["ssh", "-F", str(server.ssh_config), "testserver", "echo in"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert (done.returncode, done.stdout) == (0, "in\n"), done.stderr


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _pgrep(pattern: str) -> list[int]:
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in done.stdout.split() if int(pid) != os.getpid()]


def test_each_sshd_is_its_own_pid_in_its_own_namespace_and_stopping_leaves_nothing(sshd_pair: ServerPair) -> None:
    a, b = sshd_pair.servers
    ours = os.readlink("/proc/self/ns/mnt")
    namespaces = set()
    for server in (a, b):
        assert server.pid is not None
        # The unshare/sh wrapper exec'd into sshd: the pid we hold (and stop kills) is sshd's.
        assert os.path.basename(os.readlink(f"/proc/{server.pid}/exe")) == "sshd"
        namespaces.add(os.readlink(f"/proc/{server.pid}/ns/mnt"))
    assert len(namespaces) == 2 and ours not in namespaces

    # A live session on each server (a remote `sleep`), so stopping must also end sessions.
    clients = [subprocess.Popen(["ssh", "-F", str(s.ssh_config), "testserver", "exec sleep 300"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for s in (a, b)]
    try:
        deadline = time.monotonic() + TIMEOUT
        sessions: dict[SshServer, list[int]] = {}
        while True:
            sessions = {s: _descendants(s.pid) for s in (a, b) if s.pid is not None}
            if all(any(_cmdline(p).startswith("sleep") for p in pids) for pids in sessions.values()):
                break
            assert time.monotonic() < deadline, "no remote sleep appeared under both sshds"
            time.sleep(0.05)
        doomed = [pid for s in (a, b) for pid in [s.pid, *sessions[s]] if pid is not None]
        configs = [str(s.sshd_config) for s in (a, b)]
        assert all(_pgrep(config) for config in configs)

        sshd_pair.stop()

        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in doomed) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [pid for pid in doomed if _alive(pid)] == []
        assert [pid for config in configs for pid in _pgrep(config)] == []
        for client in clients:
            assert client.wait(timeout=TIMEOUT) != 0  # the connection was dropped, not finished
        assert not a.is_running() and not b.is_running()
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_restarted_server_keeps_its_own_directory(sshd_pair: ServerPair) -> None:
    a, b = sshd_pair.servers
    _ok(sshd_pair, a, f"printf kept > {sshd_pair.base_path}/kept")
    a.restart()  # a fresh namespace: the bind mount is made again, over the same real directory
    assert _ok(sshd_pair, a, f"cat {sshd_pair.base_path}/kept") == "kept"
    assert _run(sshd_pair, b, f"test -e {sshd_pair.base_path}/kept").exit_status == 1
