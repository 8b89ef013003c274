"""A real OpenSSH sshd on 127.0.0.1 for integration tests.

The server runs as the current user with a throwaway host key and client key,
so tests exercise the genuine SSH stack (handshake, host key checking, auth,
dropped connections) instead of a mock.

Several "machines" on one host (`start_sshd(..., mounts=...)`, `start_sshd_pair`, the `sshd_pair`
fixture): each sshd runs in a private mount namespace (`unshare --mount`) where a directory of its
own is bind-mounted at a path shared by all of them, so the same base_path on two servers is two
different places, as on two real machines. That needs root (CAP_SYS_ADMIN), `unshare` (util-linux)
and `mount`; without them the fixture skips (a failure under RECONCILER_NO_SKIP, as in CI).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.disk import SiteOnDisk

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


def _unshare_command(mounts: Mapping[str, Path], command: list[str]) -> list[str]:
    """`command` in a new, private mount namespace where each `real` directory is bind-mounted
    at its `seen` path first. unshare execs the shell and the shell execs `command`, so the
    process started keeps one pid throughout: the caller's pid is `command`'s own."""
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    binds = "".join(f"mount --bind -- {shlex.quote(str(real))} {shlex.quote(seen)} && "
                    for seen, real in mounts.items())
    return [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            f"{binds}exec {shlex.join(command)}"]


@functools.cache
def mount_namespace_problem() -> str | None:
    """Why an sshd cannot get private bind mounts on this machine, or None when it can.
    Probed once for real: a bind mount in a throwaway namespace, which must not leak out."""
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install util-linux / mount): private bind mounts need it"
    with tempfile.TemporaryDirectory(prefix="reconciler-mntns-") as tmp:
        real, seen = Path(tmp, "real"), Path(tmp, "seen")
        real.mkdir()
        seen.mkdir()
        (real / "probe").touch()
        try:
            done = subprocess.run(_unshare_command({str(seen): real}, ["test", "-e", str(seen / "probe")]),
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run unshare: {exc}"
        if done.returncode != 0:
            return ("cannot bind-mount in a private mount namespace (needs root or CAP_SYS_ADMIN; "
                    f"uid {os.getuid()}): {done.stderr.strip() or f'exit {done.returncode}'}")
        if (seen / "probe").exists():
            return "a bind mount made in a private mount namespace is visible outside it"
    return None


class SshServer:
    def __init__(self, tmp_dir: Path, mounts: Mapping[str, Path] | None = None) -> None:
        """`mounts` ({path the sessions see: real directory}): run sshd, and so every session,
        in a private mount namespace with those bind mounts (see `mount_namespace_problem`)."""
        self.host: str = HOST
        self.port: int = _free_port()
        self.user: str = pwd.getpwuid(os.getuid()).pw_name
        self._sshd = _find_sshd()
        self._dir = tmp_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_path = tmp_dir / "sshd.stderr"
        self.mounts: dict[str, Path] = {seen: Path(real) for seen, real in (mounts or {}).items()}

        host_key = tmp_dir / "ssh_host_ed25519_key"
        self.host_key: Path = host_key
        self.identity_file: Path = tmp_dir / "id_ed25519"
        _keygen(host_key)
        _keygen(self.identity_file)

        authorized_keys = tmp_dir / "authorized_keys"
        self.authorized_keys: Path = authorized_keys
        authorized_keys.write_text(Path(f"{self.identity_file}.pub").read_text())

        # Host key is generated once, so restart() keeps known_hosts valid.
        key_type, key_b64 = Path(f"{host_key}.pub").read_text().split()[:2]
        self.known_hosts_line: str = f"[{HOST}]:{self.port} {key_type} {key_b64}\n"
        self.known_hosts: Path = tmp_dir / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line)

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

    def __repr__(self) -> str:
        return f"SshServer({self.destination})"

    @property
    def sshd_config(self) -> Path:
        """The sshd's config file: its path is on the sshd's command line (`pgrep -f`)."""
        return self._config

    @property
    def pid(self) -> int | None:
        """The running sshd listener's pid (with `mounts` too: the wrapper execs into sshd)."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    def _command(self) -> list[str]:
        # -D: stay in foreground so we own the pid; -e: log to stderr.
        sshd = [self._sshd, "-D", "-e", "-f", str(self._config)]
        if not self.mounts:
            return sshd
        for seen, real in self.mounts.items():
            # A bind mount needs both ends to exist; the mount point is in OUR namespace.
            if not os.path.isabs(seen) or not os.path.isdir(seen):
                raise RuntimeError(f"mount point {seen!r} must be an existing absolute directory")
            if not real.is_dir():
                raise RuntimeError(f"{real} (to be seen at {seen}) is not a directory")
        return _unshare_command(self.mounts, sshd)

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
                self._command(),
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


def start_sshd(tmp_dir: Path, mounts: Mapping[str, Path] | None = None) -> SshServer:
    server = SshServer(tmp_dir, mounts=mounts)
    server.start()
    return server


@dataclass(eq=False)
class ServerPair:
    """Two (or more) running sshds, each in its own mount namespace with its own directory
    bind-mounted at the same `base_path`: a site with that base_path on every server lands in
    `real[server]` on each. Each server has its own host key; the client side is shared: every
    server's known_hosts lists all of them and every server accepts every identity, so one
    reconciler config (one identity_file, one known_hosts: `write_config(..., server=pair.servers[0])`)
    reaches them all."""

    servers: list[SshServer]
    base_path: str
    real: dict[SshServer, Path]

    def dir_of(self, server: SshServer) -> Path:
        """Where `server`'s base_path really is, as this process sees it."""
        return self.real[server]

    def site(self, server: SshServer, domain: str, tolerant: bool = False) -> SiteOnDisk:
        """`domain`'s layout on `server`: SiteOnDisk(dir_of(server), domain)."""
        from tests.support.disk import SiteOnDisk  # tests.support imports this module

        return SiteOnDisk(self.dir_of(server), domain, tolerant=tolerant)

    @property
    def identity_file(self) -> Path:
        return self.servers[0].identity_file

    @property
    def known_hosts(self) -> Path:
        return self.servers[0].known_hosts

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_sshd_pair(tmp_dir: Path, count: int = 2) -> ServerPair:
    """`count` sshds sharing `<tmp_dir>/base` as base_path, server i's files really in
    `<tmp_dir>/disk-<i>`. Raises (no skip) when mount namespaces are unusable: callers check
    `mount_namespace_problem()` first, as the `sshd_pair` fixture does."""
    base = tmp_dir / "base"
    base.mkdir(parents=True, exist_ok=True)  # the mount point: stays empty in this namespace
    servers: list[SshServer] = []
    real: dict[SshServer, Path] = {}
    for index in range(count):
        disk = tmp_dir / f"disk-{index}"
        disk.mkdir(exist_ok=True)
        server = SshServer(tmp_dir / f"sshd-{index}", mounts={str(base): disk})
        servers.append(server)
        real[server] = disk
    known_hosts = "".join(server.known_hosts_line for server in servers)
    identities = "".join(Path(f"{server.identity_file}.pub").read_text() for server in servers)
    for server in servers:
        server.known_hosts.write_text(known_hosts)
        server.authorized_keys.write_text(identities)
    pair = ServerPair(servers=servers, base_path=str(base), real=real)
    try:
        for server in servers:
            server.start()
    except BaseException:
        pair.stop()
        raise
    return pair


# Explicit names let test modules import these under an alias (no F811 shadowing).
@pytest.fixture(name="sshd")
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="sshd_pair")
def sshd_pair(tmp_path: Path) -> Iterator[ServerPair]:
    """Two sshds, one base_path, two filesystems (see ServerPair). Skips, with the reason, where
    mount namespaces are unusable (not root)."""
    problem = mount_namespace_problem()
    if problem is not None:
        pytest.skip(f"sshd_pair: {problem}")
    pair = start_sshd_pair(tmp_path / "sshd_pair")
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(name="sshd_session", scope="session")
def sshd_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd_session"))
    try:
        yield server
    finally:
        server.stop()
