"""fleet: many real sshd servers and converged site layouts, fast enough to set up on 2 cores.

Servers: `start_fleet(tmp, count)` starts `count` OpenSSH sshds (tests/support/sshd.py's SshServer), each
its own process on 127.0.0.1, several at once: a start is two ssh-keygens and a wait for the
socket, mostly waiting. They share one client key and one known_hosts file, as an operator's
config does (`Fleet.ssh`: Settings keywords).

Layouts: `deploy_template` deploys one site for real over SSH; `Layout.of` reads its converged
layout once (shared/, the release with its manifest, optionally the `.repo` mirror) and
`Layout.copy_to` recreates it for any number of domains with mkdir/link/symlink calls directly
(shutil.copytree stats and copies metadata per file: several times slower at 5,000 sites).
The servers' files live on tmpfs when there is one (`server_disk`): on this VM's ext4 creating a
directory or symlink costs 30-500 us (with other work running), on tmpfs 5 us, and a 5,000-site
layout is 150,000 of them; the template's objects are packed first for the same reason (no
fan-out directories; a long-lived mirror is packed too). Files
are hardlinked, except the mirror's files outside objects/ that git rewrites in place
(FETCH_HEAD): those are copied, so one site's fetch cannot scribble on another's.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.config import Settings
from reconciler.core.layout import SitePaths, is_release
from reconciler.engine.converge import Reconciler, SiteOutcome
from reconciler.engine.store import Store
from reconciler.remote.mirror import MIRROR_NAME
from tests.support import git, make_decl_repo, toml_value, write_site
from tests.support.sshd import SshServer, _descendants

TEMPLATE = "template.bench.example.com"
TEMPLATE_DECL, TEMPLATE_STATE = "decl-template", "state-template"  # under the bench's tmp: see deploy_template
START_ATTEMPTS = 3  # a port taken between choosing it and sshd binding it: try another


def domain(n: int) -> str:
    return f"site{n:04d}.bench.example.com"


@dataclass
class Fleet:
    """Running sshds reachable with one identity and one known_hosts file."""

    servers: list[SshServer]
    known_hosts: Path
    started_in: float  # seconds to start them all
    open_files: tuple[int, int] = (0, 0)  # RLIMIT_NOFILE (soft, hard) of this process after `ensure_open_files`

    @property
    def identity_file(self) -> Path:
        return self.servers[0].identity_file

    @property
    def ssh(self) -> dict[str, Any]:
        return {"identity_file": self.identity_file, "known_hosts": self.known_hosts}

    def config_lines(self) -> str:
        """The same, as reconciler.toml lines (for a daemon process)."""
        return f'identity_file = "{self.identity_file}"\nknown_hosts = "{self.known_hosts}"\n'

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def ensure_open_files(needed: int) -> tuple[int, int]:
    """Raise this process's soft open-files limit towards `needed` (up to the hard limit): the
    reconciler holds one connection per server, the bench a few files per server. Returns the
    (soft, hard) limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


def _server(tmp: Path, index: int, log_sessions: bool) -> SshServer:
    """A started sshd in tmp/sshd<index>; a new port (and directory) when the chosen one was taken."""
    problem: Exception | None = None
    for attempt in range(START_ATTEMPTS):
        server = SshServer(tmp / (f"sshd{index}" if attempt == 0 else f"sshd{index}-{attempt}"))
        if log_sessions:
            # VERBOSE logs one "Starting session" line per command: the servers' own count of SSH commands.
            config = server.sshd_config
            config.write_text(config.read_text().replace("LogLevel ERROR", "LogLevel VERBOSE"))
        try:
            server.start()
            return server
        except RuntimeError as exc:
            problem = exc
    raise RuntimeError(f"sshd {index} did not start after {START_ATTEMPTS} attempts: {problem}")


def start_fleet(tmp: Path, count: int, *, log_sessions: bool = False, workers: int = 16) -> Fleet:
    """`count` sshds, started concurrently; every one accepts the first one's client key and
    one known_hosts file lists them all. Stops what started when any fails."""
    started = time.perf_counter()
    limits = ensure_open_files(4 * count + 256)
    servers: list[SshServer] = []
    with ThreadPoolExecutor(max_workers=min(workers, max(count, 1))) as pool:
        futures = [pool.submit(_server, tmp, k, log_sessions) for k in range(count)]
        problem: BaseException | None = None
        for future in futures:
            try:
                servers.append(future.result())
            except BaseException as exc:  # keep collecting: every started sshd must be stopped
                problem = problem or exc
    ports = [s.port for s in servers]
    if problem is None and len(set(ports)) != len(ports):
        problem = RuntimeError(f"two sshds were given one port: {sorted(ports)}")  # one of them could not bind
    if problem is not None:
        for server in servers:
            server.stop()
        raise problem
    key = Path(f"{servers[0].identity_file}.pub").read_text()
    for server in servers[1:]:
        with open(server.authorized_keys, "a") as handle:
            handle.write(key)
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text("".join(s.known_hosts_line for s in servers))
    return Fleet(servers, known_hosts, time.perf_counter() - started, limits)


@contextmanager
def server_disk(fallback: Path) -> Iterator[tuple[Path, str]]:
    """A directory for the servers' files (base paths, the template), and what it is: tmpfs
    (/dev/shm) when usable, else `fallback` (created)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="reconciler-bench-", dir=shm) as name:
            yield Path(name), "tmpfs (/dev/shm)"
        return
    fallback.mkdir(parents=True, exist_ok=True)
    yield fallback, f"{fallback} (no writable /dev/shm)"


@contextmanager
def running_fleet(tmp: Path, count: int, *, log_sessions: bool = False) -> Iterator[Fleet]:
    fleet = start_fleet(tmp, count, log_sessions=log_sessions)
    try:
        yield fleet
    finally:
        fleet.stop()


def sessions_started(fleet: Fleet) -> int:
    """SSH commands the servers ran so far ("Starting session" lines, with `log_sessions`)."""
    total = 0
    for server in fleet.servers:
        log = server.sshd_config.parent / "sshd.stderr"
        if log.exists():
            total += log.read_bytes().count(b"Starting session:")
    return total


def write_sites(decl: Path, sites: list[tuple[str, dict[str, object]]]) -> None:
    """Declare every site in one commit (one commit per site would dominate the setup)."""
    for name, fields in sites:
        text = "".join(f"{key} = {toml_value(value)}\n" for key, value in fields.items())
        (decl / "sites.d" / f"{name}.toml").write_text(text)
    git(decl, "add", "-A")
    git(decl, "commit", "-q", "-m", f"declare {len(sites)} sites")


async def one_pass(settings: Settings) -> list[SiteOutcome]:
    """One pass on a new Reconciler, as the CLI runs it."""
    reconciler = Reconciler(settings, Store(settings.db_path))
    try:
        return await reconciler.run_pass()
    finally:
        await reconciler.close()
        reconciler.store.close()


def deploy_template(tmp: Path, disk: Path, fleet: Fleet, site: dict[str, Any]) -> Path:
    """Deploy the template site for real over SSH on the first server, its base_path on `disk`
    (returned); its declarations and state in `tmp`."""
    base = disk / "template"
    decl = make_decl_repo(tmp / TEMPLATE_DECL)
    write_site(decl, TEMPLATE, server=fleet.servers[0].destination, base_path=str(base), **site)
    outcome = asyncio.run(one_pass(Settings(repo=decl, state_dir=tmp / TEMPLATE_STATE, **fleet.ssh)))[0]
    if outcome.sync != "Synced":
        raise RuntimeError(f"template deploy failed: {outcome}")
    _pack_objects(SitePaths(str(base), TEMPLATE))
    return base


def _pack_objects(paths: SitePaths) -> None:
    """Pack the template's git objects (release and mirror), as a long-lived mirror's are: loose
    objects cost a fan-out directory each, and creating directories is most of a layout copy."""
    deployments = Path(paths.deployments)
    for repo in [p for p in deployments.iterdir() if is_release(p.name)] + [deployments / MIRROR_NAME]:
        if repo.is_dir():
            git(repo, "repack", "-a", "-d", "-q")


@dataclass
class Layout:
    """A converged site's files, read once from the template site, recreated per domain."""

    root: str  # the template's deployments/{domain}
    release: str
    dirs: list[str] = field(default_factory=list)  # relative to root, parents first
    linked: list[str] = field(default_factory=list)  # hardlinked files
    copied: list[str] = field(default_factory=list)  # copied files (rewritten in place by git)
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (path, target)

    @classmethod
    def of(cls, template_base: Path, *, mirror: bool = False) -> Layout:
        """The template's shared/, its one release and, with `mirror`, its `.repo` mirror."""
        source = SitePaths(str(template_base), TEMPLATE)
        release = next(p.name for p in Path(source.deployments).iterdir() if is_release(p.name))
        layout = cls(source.deployments, release)
        for top in ("shared", release, *([MIRROR_NAME] if mirror else [])):
            layout._scan(top)
        return layout

    def _scan(self, top: str) -> None:
        root = self.root
        self.dirs.append(top)
        for current, dirnames, filenames in os.walk(os.path.join(root, top)):
            rel = os.path.relpath(current, root)
            for name in [*dirnames, *filenames]:
                path = os.path.join(current, name)
                entry = os.path.join(rel, name)
                if os.path.islink(path):
                    self.symlinks.append((entry, os.readlink(path)))
                elif os.path.isdir(path):
                    self.dirs.append(entry)
                elif top == MIRROR_NAME and not entry.startswith(os.path.join(MIRROR_NAME, "objects", "")):
                    self.copied.append(entry)
                else:
                    self.linked.append(entry)
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(current, d))]

    @property
    def files(self) -> int:
        return len(self.linked) + len(self.copied) + len(self.symlinks)

    def copy_to(self, base: Path, domains: list[str]) -> None:
        """Give every domain under `base` this converged layout and its site link."""
        root = self.root + os.sep
        for name in domains:
            paths = SitePaths(str(base), name)
            target = paths.deployments + os.sep
            os.makedirs(paths.deployments)
            for entry in self.dirs:
                os.mkdir(target + entry)
            for entry in self.linked:
                os.link(root + entry, target + entry)
            for entry in self.copied:
                shutil.copyfile(root + entry, target + entry)
            for entry, link in self.symlinks:
                os.symlink(link, target + entry)
            os.symlink(paths.link_target(self.release), paths.site_link)


def server_cpu(server: SshServer) -> float:
    """CPU seconds the sshd has used so far with everything it ran: the listener and its live
    descendants (a warm connection's sshd accrues its finished sessions' shells and git as
    children's time when it reaps them)."""
    root = server.pid
    if root is None:
        return 0.0
    ticks = 0
    for pid in [root, *_descendants(root)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its time is its parent's now
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat: how saturated the
    cores were over an interval (the servers' work is on this machine too)."""
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks
