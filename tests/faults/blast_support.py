"""Support for the isolation tests (tests/faults/test_isolation.py) and the blast-radius matrix
(tests/faults/test_blast_radius.py): a "lab" of real git repositories, real server layouts in tmp
dirs (`server = "local"`, or the real sshd of tests/support/sshd.py) and the REAL reconciler driven as a
separate process (`python -m reconciler ...`), exactly as an operator runs it; the faults it
plants and the checks of who was wrongly affected.

The code under test is chosen by RECONCILER_UNDER_TEST (tests/support/process.py,
`code_under_test`): a checkout whose `reconciler/` package is put alone on the child's PYTHONPATH
(default: the checkout these tests live in). Every pass, `status` and daemon of a lab runs that
code, so the same test proves a defect on an old commit (`git worktree add /tmp/oldmain e49cf4c`,
whose package layout differs) and its fix on this one; `Lab.create` checks where the children
really import it from. In-process imports of this checkout are used for setup only (repositories,
config files) and for the on-disk layout names, which both commits share.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    DaemonProcess,
    Launcher,
    SiteOnDisk,
    git,
    make_app_repo,
    make_decl_repo,
    run_reconciler,
    write_config,
    write_site,
)
from tests.support.process import check_code_under_test
from tests.support.sshd import SshServer

CLI_TIMEOUT = 120.0
# What an operator must never see from `reconcile`/`status`: a crash, or a task that died unseen.
CRASH_MARKERS = ("Traceback", "Task exception was never retrieved", "unhandled exception",
                 "Exception ignored")
DAEMON_DEATH_MARKERS = ("Task exception was never retrieved", "unhandled exception")


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


# -- the lab --------------------------------------------------------------------------------------


@dataclass
class SiteSpec:
    domain: str
    app: Path
    base: Path
    server: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lab:
    """App repositories, one declarations repository, base paths, a state dir and a config file;
    the reconciler under test run as a separate process against them."""

    tmp: Path
    sshd: SshServer | None
    decl: Path
    state: Path
    config: Path
    launcher: Launcher  # runs the code under test on `config` in `tmp`; close() kills its daemons
    sites: dict[str, SiteSpec] = field(default_factory=dict)
    apps: dict[str, Path] = field(default_factory=dict)
    immutable: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, tmp: Path, sshd: SshServer | None = None, **config: Any) -> Lab:
        source = check_code_under_test()
        decl = make_decl_repo(tmp / "decl")
        state = tmp / "state"
        settings: dict[str, Any] = {"interval": 2, "concurrency": 4, "command_timeout": 30,
                                    "deploy_timeout": 60, "connect_timeout": 5, **config}
        interval = settings.pop("interval")
        cfg = write_config(tmp / "reconciler.toml", repo=decl, state=state, interval=interval, server=sshd,
                           **settings)
        return cls(tmp, sshd, decl, state, cfg, Launcher(tmp, cfg, source=source))

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

    def disk(self, domain: str) -> SiteOnDisk:
        """The site on its server as the lab sees it: junk planted there reads as absent."""
        return SiteOnDisk(self.sites[domain].base, domain, tolerant=True)

    def head(self, domain: str) -> str:
        return git(self.sites[domain].app, "rev-parse", "HEAD")

    # -- the reconciler under test -----------------------------------------------------------------

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> Run:
        try:
            done = run_reconciler("--config", str(self.config), *args, cwd=self.tmp, timeout=timeout,
                                  source=self.launcher.source, text=False)
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

    def start_daemon(self) -> DaemonProcess:
        return self.launcher.start()

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
        self.launcher.close()
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


def plant_lock(disk: SiteOnDisk, owner_text: str) -> Path:
    disk.lock.mkdir(parents=True, exist_ok=True)
    (disk.lock / "owner").write_text(owner_text + "\n")
    return disk.lock


def sh_quote(value: str | Path) -> str:
    return shlex.quote(str(value))


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
