"""Helpers for the end-to-end daemon tests: `reconciler run` as a REAL separate process.

Nothing here imports the daemon: the tests talk to it the way an operator does, through a
config file, git commits, the filesystem of the "server", signals and the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.layout import parse_release
from tests.sshd import SshServer

RELEASE_RE = re.compile(r"^\d{8}-\d{6}$")
MANIFEST = ".reconciler-release.json"
ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               diagnostics: Callable[[], str] | None = None, step: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{diagnostics()}" if diagnostics else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}", pytrace=False)
        time.sleep(step)


def write_config(path: Path, *, repo: Path, state: Path, interval: float = 2,
                 server: SshServer | None = None, **extra: Any) -> Path:
    lines = [f'repo = "{repo}"', f'state_dir = "{state}"', f"interval = {interval}"]
    if server is not None:
        lines += [f'identity_file = "{server.identity_file}"', f'known_hosts = "{server.known_hosts}"']
    for key, value in extra.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RECONCILER_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "--- daemon stderr (tail) ---\n" + "\n".join(self.output().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon did not exit within {timeout:.0f}s\n{self.tail()}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL the daemon and whatever it left in its process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@dataclass
class Launcher:
    """Starts daemons and CLI commands for one test; every daemon is killed at teardown."""

    tmp: Path
    config: Path
    started: list[DaemonProcess] = field(default_factory=list)

    def start(self, env: dict[str, str] | None = None, log: Path | None = None) -> DaemonProcess:
        """`reconciler run` in its own session; stderr goes to `log` (a file nobody must drain)."""
        log = log or self.tmp / f"daemon-{len(self.started)}.stderr"
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "--config", str(self.config), "run"],
                cwd=self.tmp, env=_clean_env(env), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True,
            )
        daemon = DaemonProcess(proc, log)
        self.started.append(daemon)
        return daemon

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", "--config", str(self.config), *args],
            cwd=self.tmp, env=_clean_env(), capture_output=True, text=True, timeout=60, check=False,
        )

    def status(self) -> dict[str, dict[str, Any]]:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        return {view["domain"]: view for view in json.loads(done.stdout)}

    def history(self, domain: str) -> list[dict[str, Any]]:
        done = self.cli("history", domain, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        views: list[dict[str, Any]] = json.loads(done.stdout)
        return views

    def diagnostics(self) -> str:
        parts = [d.tail() for d in self.started[-1:]]
        with contextlib.suppress(Exception):
            parts.append("--- status ---\n" + self.cli("status", "--json").stdout)
        return "\n".join(parts)

    def close(self) -> None:
        for daemon in self.started:
            daemon.kill()


# -- the "server" filesystem ----------------------------------------------------------------------


@dataclass(frozen=True)
class SiteOnDisk:
    base: Path
    domain: str

    @property
    def link(self) -> Path:
        return self.base / self.domain

    @property
    def deployments(self) -> Path:
        return self.base / "deployments" / self.domain

    def releases(self) -> list[str]:
        """Release directories, oldest first by the time the name encodes."""
        if not self.deployments.is_dir():
            return []
        names = [p.name for p in self.deployments.iterdir()
                 if RELEASE_RE.match(p.name) and p.is_dir() and parse_release(p.name) is not None]
        return sorted(names, key=lambda n: parse_release(n))  # type: ignore[arg-type,return-value]

    def active(self) -> str | None:
        """The release the site symlink points at (relative SPEC form), or None when absent."""
        try:
            target = os.readlink(self.link)
        except FileNotFoundError:
            return None
        prefix = f"deployments/{self.domain}/"
        assert target.startswith(prefix) and RELEASE_RE.match(target[len(prefix):]), target
        return target[len(prefix):]

    def manifest(self, release: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.deployments / release / MANIFEST).read_text())
        return data

    def commit_of(self, release: str) -> str:
        return subprocess.run(["git", "-C", str(self.deployments / release), "rev-parse", "HEAD"],
                              check=True, capture_output=True, text=True).stdout.strip()

    def live_commit(self) -> str | None:
        """The commit checked out in the active release, once that release is complete."""
        release = self.active()
        if release is None:
            return None
        manifest = self.manifest(release)
        if manifest.get("status") != "success":
            return None
        commit = self.commit_of(release)
        assert manifest.get("commit") == commit, (manifest, commit)
        return commit


class LinkSampler:
    """Samples a site symlink from a thread: once it first exists it must always resolve."""

    def __init__(self, link: Path, period: float = 0.002) -> None:
        self.link = link
        self.period = period
        self.samples = 0
        self.failures: list[str] = []
        self.targets: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                target = os.readlink(self.link)
                os.stat(self.link)  # follows the link: must resolve to the release dir
                self.targets.add(target)
            except OSError as exc:
                self.failures.append(f"{exc.__class__.__name__}: {exc}")
            self.samples += 1
            time.sleep(self.period)

    def __enter__(self) -> LinkSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
