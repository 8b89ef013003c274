"""A real OpenSSH sshd on 127.0.0.1 for integration tests.

The server runs as the current user with a throwaway host key and client key,
so tests exercise the genuine SSH stack (handshake, host key checking, auth,
dropped connections) instead of a mock.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def _find_sshd() -> str:
    # sshd lives in /usr/sbin, which is often missing from a non-root PATH.
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd", shutil.which("sshd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    # Fail, never skip: CI installs openssh-server, so a missing sshd is a broken setup.
    pytest.fail("sshd not found (install openssh-server)", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _descendants(root: int) -> list[int]:
    """All live descendants of `root`, read from /proc.

    sshd calls setsid() in each per-connection child, so they leave the
    listener's process group and killpg() alone would not reach them.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # process exited while we were scanning
        # The command name may contain spaces/parens; fields resume after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class SshServer:
    def __init__(self, tmp_dir: Path) -> None:
        self.host: str = HOST
        self.port: int = _free_port()
        self.user: str = pwd.getpwuid(os.getuid()).pw_name
        self._sshd = _find_sshd()
        self._dir = tmp_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_path = tmp_dir / "sshd.stderr"

        host_key = tmp_dir / "ssh_host_ed25519_key"
        self.identity_file: Path = tmp_dir / "id_ed25519"
        _keygen(host_key)
        _keygen(self.identity_file)

        authorized_keys = tmp_dir / "authorized_keys"
        authorized_keys.write_text(Path(f"{self.identity_file}.pub").read_text())

        # Host key is generated once, so restart() keeps known_hosts valid.
        key_type, key_b64 = Path(f"{host_key}.pub").read_text().split()[:2]
        self.known_hosts: Path = tmp_dir / "known_hosts"
        self.known_hosts.write_text(f"[{HOST}]:{self.port} {key_type} {key_b64}\n")

        self.home: Path = tmp_dir / "home"
        self.home.mkdir(exist_ok=True)
        (self.home / ".bashrc").write_text("")
        self._config = tmp_dir / "sshd_config"
        self._config.write_text(
            f"ListenAddress {HOST}\n"
            f"Port {self.port}\n"
            f"HostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized_keys}\n"
            f"PidFile {tmp_dir / 'sshd.pid'}\n"
            "UsePAM no\n"
            # Temp dirs are world-traversable; StrictModes would reject our keys.
            "StrictModes no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            # CI runs as root.
            "PermitRootLogin prohibit-password\n"
            # Tests may open many connections at once.
            "MaxStartups 100\n"
            "MaxSessions 10\n"
            "LogLevel ERROR\n"
            # The login shell's rc files are the test machine's, not a server's: root's ~/.bashrc
            # here runs `pyenv init`, whose rehash lock, left behind by a session killed at the
            # wrong moment, stalls every later login for 60 s. Sessions get a home of their own
            # (an empty .bashrc) so no test depends on the machine's shell setup.
            f"SetEnv HOME={self.home}\n"
        )

        self.ssh_config: Path = tmp_dir / "ssh_config"
        self.ssh_config.write_text(
            "Host testserver\n"
            f"  HostName {HOST}\n"
            f"  Port {self.port}\n"
            f"  User {self.user}\n"
            f"  IdentityFile {self.identity_file}\n"
            # Only our key: an agent or ~/.ssh keys must not influence tests.
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
        )

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        # sshd refuses to start without its privilege-separation directory.
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        # stderr goes to a file, not a pipe: nobody drains a pipe during the test.
        with open(self._stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                # -D: stay in foreground so we own the pid; -e: log to stderr.
                [self._sshd, "-D", "-e", "-f", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # own process group, killed as a unit
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with code {self._proc.returncode}:\n"
                    + self._stderr_path.read_text(errors="replace")
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"sshd not accepting on {self.host}:{self.port} after "
                        f"{START_TIMEOUT}s:\n" + self._stderr_path.read_text(errors="replace")
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # Freeze the listener so it cannot fork new children while we collect them.
        os.kill(proc.pid, signal.SIGSTOP)
        doomed = _descendants(proc.pid)
        # SIGKILL: established connections must drop now, not shut down gracefully.
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_sshd(tmp_dir: Path) -> SshServer:
    server = SshServer(tmp_dir)
    server.start()
    return server


# Explicit names let test modules import these under an alias (no F811 shadowing).
@pytest.fixture(name="sshd")
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="sshd_session", scope="session")
def sshd_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd_session"))
    try:
        yield server
    finally:
        server.stop()
