"""Host keys against a hostile ssh_config, over a real OpenSSH sshd (tests/support/sshd.py).

Threat model: a server cannot make the reconciler trust an unverified host key. Whoever answers
on the server's address (a server that is not the declared one, a man in the middle) offers a
key that no known_hosts file holds; whatever the ssh_config says, the connection is refused
before anything runs, and the refusal names the host and the offered fingerprint.

asyncssh takes an ssh_config's `UserKnownHostsFile none` as "accept any host key". The transport
used to look for it with the host name alone, so a block that matches on what that look-up left
out (`Match user`, the `Match final` re-read) turned verification off for the real connection.
Every case here holds the key in no known_hosts file: not in the
reconciler's config (none is set), not in the ssh_config, not in ~/.ssh/known_hosts (HOME is
an empty directory).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import TransportError
from reconciler.remote.transport.base import Result
from reconciler.remote.transport.ssh import SshOptions, SshTransport
from tests.support.remote import run_once
from tests.support.sshd import SshServer

TIMEOUT = 20.0


def _fingerprint(server: SshServer) -> str:
    host_pub = server._dir / "ssh_host_ed25519_key.pub"
    return subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(host_pub)], check=True,
                          capture_output=True, text=True).stdout.split()[1]


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME without ~/.ssh: no known_hosts, no config asyncssh could fall back to. And a local user
    that is not the server's user, as on a real reconciler host (the daemon runs as one user and
    deploys as another): `Match user` then matches the destination's user only."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):  # getpass.getuser(), as asyncssh asks it
        monkeypatch.setenv(name, "reconciler-local")
    return home


def _run(server: str, config: Path, identity: Path, command: str) -> Result:
    transport = SshTransport(server, SshOptions(identity_file=identity, ssh_config=config, connect_timeout=10.0))
    return run_once(transport, command, TIMEOUT)


def _refused(sshd: SshServer, config_text: str, tmp_path: Path, server: str | None = None) -> str:
    config = tmp_path / "ssh_config"
    config.write_text(config_text)
    canary = tmp_path / "CANARY"
    destination = server or sshd.destination
    with pytest.raises(TransportError, match=r"(?i)host key") as info:
        _run(destination, config, sshd.identity_file, f"touch {canary}")
    assert not canary.exists(), "a command ran on a host whose key was never verified"
    message = str(info.value)
    assert message.startswith(f"{destination}: "), message
    return message


# Each config turns verification off (to asyncssh) for the destination `user@127.0.0.1:port`.
DISABLING = {
    "Match user": "Match user {user}\n  UserKnownHostsFile none\n",
    "Match host": "Match host {host}\n  UserKnownHostsFile none\n",
    "Match all": "Match all\n  UserKnownHostsFile none\n",
    "Match originalhost": "Match originalhost {host}\n  UserKnownHostsFile none\n",
    "Match user and host": "Match user {user} host {host}\n  UserKnownHostsFile none\n",
    "Match final": "Match final\n  UserKnownHostsFile none\n",
    "Host *": "Host *\n  UserKnownHostsFile none\n",
    "Include": "Include {include}\n",
}


@pytest.mark.parametrize("form", list(DISABLING))
def test_an_ssh_config_cannot_turn_host_key_verification_off(
        form: str, sshd_session: SshServer, tmp_path: Path, empty_home: Path) -> None:
    include = tmp_path / "included.conf"
    include.write_text(DISABLING["Match user"].format(user=sshd_session.user, host=sshd_session.host))
    text = DISABLING[form].format(user=sshd_session.user, host=sshd_session.host, include=include)
    message = _refused(sshd_session, text, tmp_path)
    assert f"offered ssh-ed25519 {_fingerprint(sshd_session)}" in message
    assert "UserKnownHostsFile none" in message, "the refusal says why the ssh_config was not followed"


@pytest.mark.parametrize("value", ["no", "accept-new", "off"])
def test_strict_host_key_checking_cannot_accept_a_key(
        value: str, sshd_session: SshServer, tmp_path: Path, empty_home: Path) -> None:
    # asyncssh ignores StrictHostKeyChecking; it must stay so: an unknown key is never added or accepted.
    message = _refused(sshd_session, f"Host *\n  StrictHostKeyChecking {value}\n", tmp_path)
    assert f"offered ssh-ed25519 {_fingerprint(sshd_session)}" in message
    assert not (empty_home / ".ssh" / "known_hosts").exists()


def test_an_alias_with_match_user_is_refused(sshd_session: SshServer, tmp_path: Path, empty_home: Path) -> None:
    text = (f"Host web\n  HostName {sshd_session.host}\n  Port {sshd_session.port}\n  User {sshd_session.user}\n"
            f"Match user {sshd_session.user}\n  UserKnownHostsFile none\n")
    message = _refused(sshd_session, text, tmp_path, server="web")
    assert f"offered ssh-ed25519 {_fingerprint(sshd_session)}" in message


def test_a_jump_host_with_verification_off_is_refused(
        sshd_session: SshServer, tmp_path: Path, empty_home: Path) -> None:
    # asyncssh connects to a ProxyJump host from the ssh_config alone; its key must be verified too.
    # The target's key is known: only the jump host is unverified.
    text = (f"Host jumpbox\n  HostName {sshd_session.host}\n  Port {sshd_session.port}\n"
            f"  User {sshd_session.user}\n  IdentityFile {sshd_session.identity_file}\n"
            f"Host target\n  HostName {sshd_session.host}\n  Port {sshd_session.port}\n"
            f"  User {sshd_session.user}\n  ProxyJump jumpbox\n  UserKnownHostsFile {sshd_session.known_hosts}\n"
            f"Match user {sshd_session.user} originalhost jumpbox\n  UserKnownHostsFile none\n")
    message = _refused(sshd_session, text, tmp_path, server="target")
    assert "jump host jumpbox" in message, message


def test_verification_stays_on_with_the_global_known_hosts(
        sshd_session: SshServer, tmp_path: Path, empty_home: Path) -> None:
    """Control: the same hostile block, but the key is in a GlobalKnownHostsFile. As with OpenSSH,
    `UserKnownHostsFile none` drops the user files only; the key is verified and the command runs."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Match user {sshd_session.user}\n  UserKnownHostsFile none\n"
                      f"  GlobalKnownHostsFile {sshd_session.known_hosts}\n")
    result = _run(sshd_session.destination, config, sshd_session.identity_file, "echo verified")
    assert result == Result(0, "verified\n", "")


def test_the_user_known_hosts_still_verifies(sshd_session: SshServer, tmp_path: Path, empty_home: Path) -> None:
    """Control: no ssh_config setting at all, the key in ~/.ssh/known_hosts: asyncssh's default, kept."""
    (empty_home / ".ssh").mkdir()
    (empty_home / ".ssh" / "known_hosts").write_text(sshd_session.known_hosts.read_text())
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  ServerAliveInterval 15\n")
    result = _run(sshd_session.destination, config, sshd_session.identity_file, "echo verified")
    assert result == Result(0, "verified\n", "")
