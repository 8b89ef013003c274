"""A deploy reaches the app's git host over as few SSH connections as git allows.

Real parts: the git host is a real OpenSSH sshd on 127.0.0.1 whose authorized_keys runs every
session through a wrapper that logs `$SSH_CONNECTION` (the client's port tells connections apart)
and the git command, then runs it. The site is "local" so the reconciler's own commands are
subprocesses here and only git talks SSH; HOME is a short temp dir, where the multiplexing socket
lives (shell.GIT_PREAMBLE)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import app_commit, make_app_repo, make_decl_repo, write_site
from tests.support.config import reconcile, settings_for
from tests.support.sshd import SshServer

DOMAIN = "git.example.com"


@pytest.fixture
def git_host(sshd: SshServer, tmp_path: Path) -> Iterator[tuple[SshServer, Path]]:
    log = tmp_path / "sessions.log"
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s|%s\\n" "$SSH_CONNECTION" "$SSH_ORIGINAL_COMMAND" >> {log}\n'
                       'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
    wrapper.chmod(0o755)
    key = Path(f"{sshd.identity_file}.pub").read_text().strip()
    sshd.authorized_keys.write_text(f'command="{wrapper}" {key}\n')
    yield sshd, log


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # The control socket's path must fit in sun_path: pytest's tmp_path is too long for it.
    home = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))
    monkeypatch.setenv("HOME", str(home))
    yield home
    for socket in (home / ".ssh" / "reconciler-mux").glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "x"], capture_output=True, timeout=10)
    subprocess.run(["rm", "-rf", str(home)], check=False)


def _sessions(log: Path) -> list[tuple[str, str]]:
    """(client address and port, git command) per session."""
    rows = []
    for line in log.read_text().splitlines():
        connection, _, command = line.partition("|")
        rows.append((" ".join(connection.split()[:2]), command.split()[0]))
    return rows


def test_probe_and_deploys_share_one_ssh_connection_to_the_git_host(
        git_host: tuple[SshServer, Path], short_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, log = git_host
    monkeypatch.setenv("GIT_SSH_COMMAND", f"ssh -i {server.identity_file} -o IdentitiesOnly=yes "
                       f"-o UserKnownHostsFile={server.known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes")
    app = make_app_repo(tmp_path / "app")
    bare = tmp_path / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(app), str(bare)], check=True)
    url = f"ssh://{server.user}@{server.host}:{server.port}{bare}"
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path=str(tmp_path / "srv"), repository=url, script="true\n")
    settings = settings_for(decl, tmp_path / "state", allow_local=True)

    assert reconcile(settings)[DOMAIN].sync == "Synced"  # first deploy: probe + clone of the mirror
    for n in range(2):  # two re-deploys: probe + a fetch of the new commit each
        commit = app_commit(app, f"change {n}", {"index.php": f"v{n}"})
        subprocess.run(["git", "push", "-q", str(bare), "main"], cwd=app, check=True)
        outcome = reconcile(settings)[DOMAIN]
        assert outcome.sync == "Synced" and any(a.startswith("deploy") for a in outcome.actions), outcome
        live = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "srv" / DOMAIN, check=True,
                              capture_output=True, text=True).stdout.strip()
        assert live == commit

    sessions = _sessions(log)
    commands = [command for _, command in sessions]
    # One listing per pass (the probe's ls-remote); a deploy fetches the commit it was told.
    assert commands.count("git-upload-pack") == len(commands) == 6, sessions
    connections = {client for client, _ in sessions}
    assert len(connections) == 1, f"every git command opened its own SSH connection: {sessions}"
    # The mirror's branch follows the fetched commit (a release's origin/main comes from it).
    mirror = tmp_path / "srv" / "deployments" / DOMAIN / ".repo"
    assert subprocess.run(["git", "-C", str(mirror), "rev-parse", "refs/heads/main"], capture_output=True,
                          text=True, check=True).stdout.strip() == commit


def test_a_home_too_long_for_a_socket_connects_as_before(
        git_host: tuple[SshServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, log = git_host
    home = tmp_path / ("h" * 60)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_SSH_COMMAND", f"ssh -i {server.identity_file} -o IdentitiesOnly=yes "
                       f"-o UserKnownHostsFile={server.known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes")
    app = make_app_repo(tmp_path / "app")
    bare = tmp_path / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(app), str(bare)], check=True)
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path=str(tmp_path / "srv"),
               repository=f"ssh://{server.user}@{server.host}:{server.port}{bare}", script="true\n")
    assert reconcile(settings_for(decl, tmp_path / "state", allow_local=True))[DOMAIN].sync == "Synced"
    assert not (home / ".ssh" / "reconciler-mux").exists()
    assert len({client for client, _ in _sessions(log)}) == 2  # probe and clone: a connection each
