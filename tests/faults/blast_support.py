"""Support for the isolation tests (tests/test_isolation_defects.py) and the blast-radius matrix
(tests/faults/test_blast_radius.py): a "lab" of real git repositories, real server layouts in tmp
dirs (`server = "local"`, or the real sshd of tests/sshd.py) and the REAL reconciler driven as a
separate process (`python -m reconciler ...`), exactly as an operator runs it.

The code under test is chosen by RECONCILER_UNDER_TEST: a checkout whose `reconciler/` package is
put first on the child's PYTHONPATH (default: the checkout these tests live in). Every pass,
`status` and daemon of a test runs that code, so the same test proves a defect on an old commit
(`git worktree add /tmp/oldmain e49cf4c`, whose package layout differs) and its fix on this one.
In-process imports of this checkout are used for setup only (repositories, config files).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.builders import git, make_app_repo, make_decl_repo, write_site
from tests.daemon_support import DaemonProcess, write_config
from tests.sshd import SshServer

ROOT = Path(__file__).resolve().parents[2]
UNDER_TEST = "RECONCILER_UNDER_TEST"
CLI_TIMEOUT = 120.0
# What an operator must never see from `reconcile`/`status`: a crash, or a task that died unseen.
CRASH_MARKERS = ("Traceback", "Task exception was never retrieved", "unhandled exception",
                 "Exception ignored")
DAEMON_DEATH_MARKERS = ("Task exception was never retrieved", "unhandled exception")
MANIFEST = ".reconciler-release.json"
LOCK_DIR = ".reconciler-lock"
_RELEASE_CHARS = set("0123456789-")


def code_under_test() -> Path:
    value = os.environ.get(UNDER_TEST)
    return Path(value).resolve() if value else ROOT


def product_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a reconciler child: only the code under test on PYTHONPATH, no config
    or systemd variables leaking in from the test runner, no fault injection."""
    drop = {"RECONCILER_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
            "RECONCILER_FAULT", "PYTHONPATH", "PYTHONIOENCODING", UNDER_TEST}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(code_under_test())
    env.update(extra or {})
    return env


@functools.cache
def imported_from() -> str:
    """Where a child process really imports `reconciler` from (checked once per session)."""
    done = subprocess.run([sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
                          cwd="/", env=product_env(), capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def check_code_under_test() -> None:
    where = imported_from()
    assert where.startswith(str(code_under_test()) + os.sep), (
        f"children import reconciler from {where}, not from {code_under_test()}")


def crash_lines(text: str, markers: Iterable[str] = CRASH_MARKERS) -> list[str]:
    return [line for line in text.splitlines() if any(m in line for m in markers)]


@dataclass
class Run:
    """One finished CLI process."""

    args: tuple[str, ...]
    rc: int
    raw_out: bytes
    raw_err: bytes

    @property
    def out(self) -> str:
        return self.raw_out.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.raw_err.decode(errors="replace")

    @property
    def text(self) -> str:
        return self.out + self.err

    def describe(self) -> str:
        tail = "\n".join(self.text.splitlines()[-40:])
        return f"$ reconciler {' '.join(self.args)}  -> exit {self.rc}\n{tail}"


# -- the server's disk ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    """A site's layout on a server, read directly (local disk; the sshd "server" is this machine).
    Tolerates junk: planted files must not break the observer."""

    base: Path
    domain: str

    @property
    def link(self) -> Path:
        return self.base / self.domain

    @property
    def deployments(self) -> Path:
        return self.base / "deployments" / self.domain

    def release(self, name: str) -> Path:
        return self.deployments / name

    def releases(self) -> list[str]:
        """Real release directories (release-shaped names), oldest first by encoded time."""
        if not self.deployments.is_dir():
            return []
        names = [p.name for p in self.deployments.iterdir()
                 if len(p.name) == 15 and p.name[8] == "-" and set(p.name) <= _RELEASE_CHARS
                 and p.is_dir() and not p.is_symlink()]
        return sorted(names, key=lambda n: (n[4:8], n[2:4], n[0:2], n[9:]))

    def active(self) -> str | None:
        """The release the site symlink names in the SPEC's relative form, else None."""
        try:
            target = os.readlink(self.link)
        except OSError:
            return None
        prefix = f"deployments/{self.domain}/"
        name = target[len(prefix):] if target.startswith(prefix) else ""
        return name if name in self.releases() else None

    def manifest(self, release: str) -> dict[str, Any]:
        try:
            data = json.loads((self.release(release) / MANIFEST).read_text())
        except (OSError, ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    def commit_of(self, release: str) -> str | None:
        done = subprocess.run(["git", "-C", str(self.release(release)), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def live_commit(self) -> str | None:
        """The commit checked out in the active release, when that release is complete."""
        release = self.active()
        if release is None or self.manifest(release).get("status") != "success":
            return None
        return self.commit_of(release)


# -- the lab --------------------------------------------------------------------------------------


@dataclass
class SiteSpec:
    domain: str
    app: Path
    base: Path
    server: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Daemon:
    process: DaemonProcess

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.alive()

    def log(self) -> str:
        return self.process.output()

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM and wait: the exit status, or None when it had to be killed."""
        if not self.process.alive():
            return self.process.proc.returncode
        self.process.signal(signal.SIGTERM)
        try:
            return self.process.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


@dataclass
class Lab:
    """App repositories, one declarations repository, base paths, a state dir and a config file;
    the reconciler under test run as a separate process against them."""

    tmp: Path
    sshd: SshServer | None
    decl: Path
    state: Path
    config: Path
    sites: dict[str, SiteSpec] = field(default_factory=dict)
    apps: dict[str, Path] = field(default_factory=dict)
    daemons: list[Daemon] = field(default_factory=list)
    immutable: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, tmp: Path, sshd: SshServer | None = None, **config: Any) -> Lab:
        check_code_under_test()
        decl = make_decl_repo(tmp / "decl")
        state = tmp / "state"
        settings: dict[str, Any] = {"interval": 2, "concurrency": 4, "command_timeout": 30,
                                    "deploy_timeout": 60, "connect_timeout": 5, **config}
        interval = settings.pop("interval")
        cfg = write_config(tmp / "reconciler.toml", repo=decl, state=state, interval=interval, server=sshd,
                           **settings)
        return cls(tmp, sshd, decl, state, cfg)

    # -- declarations -----------------------------------------------------------------------------

    def app(self, name: str) -> Path:
        if name not in self.apps:
            self.apps[name] = make_app_repo(self.tmp / "apps" / name)
        return self.apps[name]

    def base(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(exist_ok=True)
        return path

    @property
    def remote(self) -> str:
        assert self.sshd is not None, "this lab has no sshd server"
        return self.sshd.destination

    def add(self, domain: str, *, app: Path, base: Path, server: str = "local", **fields: Any) -> SiteSpec:
        spec = SiteSpec(domain, app, base, server, dict(fields))
        self.sites[domain] = spec
        self._write(spec)
        return spec

    def declare(self, domain: str, **changes: Any) -> None:
        """Change fields of a declared site (None removes a field) and commit."""
        spec = self.sites[domain]
        for key, value in changes.items():
            if value is None:
                spec.fields.pop(key, None)
            else:
                spec.fields[key] = value
        self._write(spec)

    def _write(self, spec: SiteSpec) -> None:
        values: dict[str, Any] = {"server": spec.server, "base_path": str(spec.base),
                                  "repository": str(spec.app), **spec.fields}
        write_site(self.decl, spec.domain, **values)

    def disk(self, domain: str) -> Disk:
        spec = self.sites[domain]
        return Disk(spec.base, domain)

    def head(self, domain: str) -> str:
        return git(self.sites[domain].app, "rev-parse", "HEAD")

    # -- the reconciler under test -----------------------------------------------------------------

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> Run:
        argv = ("--config", str(self.config), *args)
        try:
            done = subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=self.tmp, env=product_env(),
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            return Run(tuple(args), -9, exc.stdout or b"", (exc.stderr or b"") + b"\n[test: timed out]")
        return Run(tuple(args), done.returncode, done.stdout, done.stderr)

    def reconcile(self, *args: str) -> Run:
        return self.cli("reconcile", *args)

    def status(self) -> dict[str, dict[str, Any]]:
        """`status --json` of the code under test: {} when it cannot be read (that is a finding
        of its own; callers then see every site as not reported)."""
        done = self.cli("status", "--json", timeout=60)
        try:
            views = json.loads(done.out)
        except ValueError:
            return {}
        return {v["domain"]: v for v in views if isinstance(v, dict) and "domain" in v}

    def converge(self) -> None:
        """A setup pass of the code under test that must end with every site Synced (exit 0 and
        a `<domain>: Synced/...` line per declared site)."""
        run = self.reconcile()
        missing = [d for d in self.sites if f"{d}: Synced/" not in run.out]
        if run.rc != 0 or missing or crash_lines(run.text):
            pytest.fail(f"setup pass did not converge: {missing or 'crash'}\n{run.describe()}", pytrace=False)

    def start_daemon(self) -> Daemon:
        log = self.tmp / f"daemon-{len(self.daemons)}.log"
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "--config", str(self.config), "run"],
                cwd=self.tmp, env=product_env(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True,
            )
        daemon = Daemon(DaemonProcess(proc, log))
        self.daemons.append(daemon)
        return daemon

    # -- faults -----------------------------------------------------------------------------------

    def make_immutable(self, path: Path) -> None:
        """`chattr +i`: a fault even root cannot get past (permissions do not stop root).
        Undone at close()."""
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
        self.immutable.append(path)

    def watch_immutable(self, path: Path) -> None:
        """A path a deploy script will make immutable: undone at close()."""
        self.immutable.append(path)

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.process.kill()
        for path in reversed(self.immutable):
            with contextlib.suppress(OSError):
                subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)


def chattr_available(probe_dir: Path) -> bool:
    probe_dir.mkdir(parents=True, exist_ok=True)
    target = probe_dir / "chattr-probe"
    target.write_text("x")
    ok = subprocess.run(["chattr", "+i", str(target)], capture_output=True, check=False).returncode == 0
    subprocess.run(["chattr", "-i", str(target)], capture_output=True, check=False)
    target.unlink()
    return ok


def foreign_owner(host: str = "build-7.elsewhere.example", **extra: Any) -> str:
    """The owner token of a lock another reconciler took just now (fresh: never stale)."""
    owner = {"instance": "0123456789abcdef", "run": "fedcba9876543210", "host": host, "pid": 4242,
             "purpose": "deploy", "since": time.time(), **extra}
    return json.dumps(owner, sort_keys=True, separators=(",", ":"))


def plant_lock(disk: Disk, owner_text: str) -> Path:
    lock = disk.deployments / LOCK_DIR
    lock.mkdir(parents=True, exist_ok=True)
    (lock / "owner").write_text(owner_text + "\n")
    return lock


def sh_quote(value: str | Path) -> str:
    return shlex.quote(str(value))


def poll(predicate: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    """Poll until `predicate` returns something truthy (returned); None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(step)


# -- verdicts ---------------------------------------------------------------------------------------


def sibling_problems(lab: Lab, views: dict[str, dict[str, Any]], domain: str, head: str,
                     before: Iterable[str] = ()) -> list[str]:
    """Why a healthy sibling was wrongly affected ([] when it deployed `head` and reports it):
    status Synced/Healthy with active and desired commit = head, the live release on the server
    checked out at head, and none of its earlier releases gone."""
    problems = []
    view = views.get(domain)
    if view is None:
        problems.append(f"{domain}: not in `status --json`")
    else:
        seen = {k: view.get(k) for k in ("sync", "health", "active_commit", "desired_commit", "message")}
        if (seen["sync"], seen["health"]) != ("Synced", "Healthy") or seen["active_commit"] != head \
                or seen["desired_commit"] != head:
            problems.append(f"{domain}: status is not Synced/Healthy with active = desired = {head[:12]}: {seen}")
    disk = lab.disk(domain)
    live = disk.live_commit()
    if live != head:
        problems.append(f"{domain}: live release {disk.active()} is at {str(live)[:12]}, not {head[:12]}")
    gone = sorted(set(before) - set(disk.releases()))
    if gone:
        problems.append(f"{domain}: releases deleted: {gone}")
    return problems


def site_problems(views: dict[str, dict[str, Any]], domain: str, syncs: Iterable[str],
                  keywords: Iterable[str], degraded_ok: bool = False) -> list[str]:
    """Why the faulty site does not report its fault: its sync must be one of `syncs` (or, with
    `degraded_ok`, health Degraded) and its message must name the cause (one of `keywords`)."""
    view = views.get(domain)
    if view is None:
        return [f"{domain}: not in `status --json`"]
    sync, health, message = view.get("sync"), view.get("health"), view.get("message") or ""
    problems = []
    if sync not in set(syncs) and not (degraded_ok and health == "Degraded"):
        wanted = "/".join(syncs) + (" (or health Degraded)" if degraded_ok else "")
        problems.append(f"{domain}: reported {sync}/{health}, expected {wanted}; message {message!r}")
    words = tuple(keywords)
    if not message.strip():
        problems.append(f"{domain}: no message (expected one naming {words})")
    elif words and not any(w.lower() in message.lower() for w in words):
        problems.append(f"{domain}: message {message[:300]!r} names none of {words}")
    return problems


def run_problems(run: Run, rc: int | None) -> list[str]:
    """A CLI run that crashed or exited otherwise than `rc` (None: any)."""
    problems = []
    crashed = crash_lines(run.text)
    if crashed:
        problems.append(f"`reconciler {' '.join(run.args)}` crashed: {crashed[:3]}")
    if rc is not None and run.rc != rc:
        problems.append(f"`reconciler {' '.join(run.args)}` exited {run.rc}, expected {rc}")
    return problems
