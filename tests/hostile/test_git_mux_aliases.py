"""Git's SSH multiplexing never mixes credentials.

GitHub's documented setup for several private repositories on one server is one deploy key per
repository, each behind an ssh_config alias of the same host (`Host gh-a / HostName github.com /
IdentityFile key-a`). OpenSSH's `%C` hashes the resolved host, port and user only, so with a
ControlPath of `%C` both aliases shared the first master connection: site A's git ran with site
B's key and failed ("Repository not found"). The socket is now named after the whole resolved
configuration (`ssh -G`: the identity among it), so each alias keeps its own connection and key.

And the socket directory (~/.ssh/reconciler-mux) is used only when it is a real directory of
ours that nobody else can write: a symlink (even to a directory of ours) or a group/world-writable
directory means git connects without multiplexing, and nothing is created there.

Real parts: the git host is a real sshd whose authorized_keys gives
each deploy key a forced command that serves only its own repository and logs which key asked for
what; the deploy user's ssh_config has the aliases gh-a and gh-b (same HostName, own IdentityFile);
the sites are `local`, so only git talks SSH. HOME is a short temp dir (a socket path must fit in
sun_path).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import app_commit, git, make_app_repo, make_decl_repo, write_site
from tests.support.config import reconcile, settings_for
from tests.support.sshd import SshServer

SITES = {"a": "a.example.com", "b": "b.example.com"}


@dataclass
class GitHost:
    server: SshServer
    root: Path
    ssh_config: Path
    log: Path

    def repository(self, name: str) -> str:
        """The site's repository URL: the alias of its deploy key, then the bare repository's path."""
        return f"gh-{name}:{self.root / f'repo-{name}.git'}"

    def push(self, name: str, message: str) -> str:
        commit = app_commit(self.root / f"src-{name}", message)
        git(self.root / f"src-{name}", "push", "-q", str(self.root / f"repo-{name}.git"), "main")
        return commit

    def sessions(self) -> list[tuple[str, str, str]]:
        """(deploy key, client address and port, git command) of every SSH session."""
        rows = []
        for line in self.log.read_text().splitlines():
            key, connection, command = line.split("|", 2)
            rows.append((key, " ".join(connection.split()[:2]), command))
        return rows


@pytest.fixture
def git_host(sshd: SshServer, tmp_path: Path) -> GitHost:
    root = tmp_path / "githost"
    root.mkdir()
    log = root / "gate.log"
    log.touch()
    for name in SITES:
        make_app_repo(root / f"src-{name}")
        subprocess.run(["git", "clone", "-q", "--bare", str(root / f"src-{name}"), str(root / f"repo-{name}.git")],
                       check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"key-{name}", "-f",
                        str(root / f"key-{name}")], check=True)
    # Deploy key $1 may read repo-$1.git only, as a forge's deploy keys.
    gate = root / "gate.sh"
    gate.write_text('#!/bin/sh\n'
                    f'printf "key-%s|%s|%s\\n" "$1" "$SSH_CONNECTION" "$SSH_ORIGINAL_COMMAND" >> {log}\n'
                    'case "$SSH_ORIGINAL_COMMAND" in *"repo-$1.git"*) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;; esac\n'
                    'echo "ERROR: Repository not found." >&2; exit 1\n')
    gate.chmod(0o755)
    sshd.authorized_keys.write_text("".join(
        f'command="{gate} {name}",no-pty {(root / f"key-{name}.pub").read_text().strip()}\n' for name in SITES))
    config = root / "ssh_config"
    config.write_text("".join(
        f"Host gh-{name}\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {root / f'key-{name}'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {sshd.known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n" for name in SITES))
    return GitHost(sshd, root, config, log)


@pytest.fixture
def home(git_host: GitHost, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short HOME (the socket must fit in sun_path) and the deploy user's git ssh command."""
    path = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.setenv("GIT_SSH_COMMAND", f"ssh -F {git_host.ssh_config}")
    yield path
    for sock in path.rglob("*"):
        if sock.is_socket():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=10)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _declare(tmp_path: Path, git_host: GitHost, names: list[str]) -> Path:
    decl = make_decl_repo(tmp_path / "decl")
    for name in names:
        write_site(decl, SITES[name], server="local", base_path=str(tmp_path / "srv"),
                   repository=git_host.repository(name), script="true\n")
    return decl


def _live(tmp_path: Path, domain: str) -> str:
    return git(tmp_path / "srv" / domain, "rev-parse", "HEAD")


def test_two_aliases_of_one_git_host_keep_their_own_deploy_keys(
        git_host: GitHost, home: Path, tmp_path: Path) -> None:
    settings = settings_for(_declare(tmp_path, git_host, ["a", "b"]), tmp_path / "state")
    for round_ in range(2):  # the second pass reuses the connections the first one left
        wanted = {name: git_host.push(name, f"round {round_} of {name}") for name in SITES}
        outcomes = reconcile(settings)
        for name, domain in SITES.items():
            assert outcomes[domain].sync == "Synced", (outcomes, git_host.sessions())
            assert _live(tmp_path, domain) == wanted[name]

    sessions = git_host.sessions()
    # Every request reached the git host with the key of its own site, and nothing was refused.
    assert sessions and all(f"repo-{key.removeprefix('key-')}.git" in command for key, _, command in sessions), sessions
    # Multiplexing is on: one connection (and one socket) per deploy key, for probes and deploys alike.
    for name in SITES:
        assert len({client for key, client, _ in sessions if key == f"key-{name}"}) == 1, sessions
    sockets = [p for p in (home / ".ssh" / "reconciler-mux").iterdir() if p.is_socket()]
    assert len(sockets) == 2, sockets


@pytest.mark.parametrize("kind", ["symlink", "0777", "0770"])
def test_a_mux_directory_others_could_control_is_not_used(
        kind: str, git_host: GitHost, home: Path, tmp_path: Path) -> None:
    """A symlink (to a directory of ours, 0700 even) or a directory others may write: git connects
    without multiplexing, the site deploys, and no socket is made there."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    mux = ssh_dir / "reconciler-mux"
    if kind == "symlink":
        where = home / "elsewhere"
        where.mkdir(mode=0o700)
        mux.symlink_to(where)
    else:
        where = mux
        where.mkdir()
        os.chmod(where, int(kind, 8))  # past the umask

    outcome = reconcile(settings_for(_declare(tmp_path, git_host, ["a"]), tmp_path / "state"))[SITES["a"]]

    assert outcome.sync == "Synced", (outcome, git_host.sessions())
    assert list(where.iterdir()) == [], "a socket was made where others could reach it"
    assert mux.is_symlink() == (kind == "symlink")
    # Probe and clone: a connection each (the same pass over one master would be one).
    assert len({client for _, client, _ in git_host.sessions()}) == 2, git_host.sessions()
