"""`python -m reconciler` as a REAL separate process: the CLI and the daemon, the way an
operator starts them. Every launch goes through `reconciler_process`/`run_reconciler` and
gets the same environment (`clean_env`).

Which `reconciler` a child runs: this checkout by default. A launch given `source` (a checkout
directory) runs that checkout's package instead, alone on the child's PYTHONPATH; the tests that
can prove a defect on old code take it from RECONCILER_UNDER_TEST (`code_under_test()`), e.g.
`RECONCILER_UNDER_TEST=/tmp/oldmain` for a `git worktree add /tmp/oldmain e49cf4c`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNDER_TEST = "RECONCILER_UNDER_TEST"

# Inherited variables that would change what a child reconciler does: a config it would read,
# a fault it would deal itself, systemd's sockets it would talk to, an output encoding; and the
# tests' own choice of the code under test, which no child needs.
SCRUBBED = ("RECONCILER_CONFIG", "RECONCILER_FAULT", "PYTHONIOENCODING",
            "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", UNDER_TEST)

# Set by tests/conftest.py for the running test: the daemon guard below reads it. None outside pytest.
current_markers: set[str] | None = None


def clean_env(extra: dict[str, str] | None = None, source: Path | None = None) -> dict[str, str]:
    """This process's environment without SCRUBBED, plus `extra`. PYTHONPATH: this checkout
    first, then the inherited one; with `source`, that checkout alone (nothing inherited can
    shadow the code under test)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    if source is None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    else:
        env["PYTHONPATH"] = str(source)
    env.update(extra or {})
    return env


def code_under_test() -> Path:
    """The checkout RECONCILER_UNDER_TEST names (resolved), else this one."""
    value = os.environ.get(UNDER_TEST)
    return Path(value).resolve() if value else ROOT


@functools.cache
def imported_from(source: Path) -> str:
    """Where a child launched with `source` really imports `reconciler` from (asked once)."""
    done = subprocess.run([sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
                          cwd="/", env=clean_env(source=source), capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout.strip()


def check_code_under_test() -> Path:
    """code_under_test(), once a child has been seen to import `reconciler` from it."""
    source = code_under_test()
    where = imported_from(source)
    assert where.startswith(str(source) + os.sep), f"children import reconciler from {where}, not from {source}"
    return source


def reconciler_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def reconciler_process(*args: str, cwd: Path, env: dict[str, str] | None = None, text: bool = True,
                       stdout: int | IO[Any] | None = subprocess.PIPE, stderr: int | IO[Any] | None = subprocess.PIPE,
                       source: Path | None = None, **popen: Any) -> subprocess.Popen[Any]:
    """`python -m reconciler ARGS` started in `cwd` with clean_env(env, source); not waited for."""
    return subprocess.Popen(reconciler_argv(*args), cwd=cwd, env=clean_env(env, source), stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr, text=text, encoding="utf-8" if text else None,
                            errors="replace" if text else None, **popen)


def run_reconciler(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60.0,
                   preexec: Callable[[], None] | None = None, source: Path | None = None,
                   text: bool = True) -> subprocess.CompletedProcess[Any]:
    """`python -m reconciler ARGS` run to completion; output as text (undecodable bytes replaced),
    or as bytes with `text=False`. A timeout raises subprocess.TimeoutExpired (the child killed)."""
    return subprocess.run(reconciler_argv(*args), cwd=cwd, env=clean_env(env, source), stdin=subprocess.DEVNULL,
                          capture_output=True, text=text, encoding="utf-8" if text else None,
                          errors="replace" if text else None, timeout=timeout, check=False, preexec_fn=preexec)


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

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM and wait: the exit status (also when it had already exited), or None when it
        did not exit within `timeout` and had to be killed."""
        if not self.alive():
            return self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

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
    """Starts daemons and CLI commands on one config file, in `tmp`; `close` kills every daemon.
    Get one from the `daemons` fixture, which closes it at teardown."""

    tmp: Path
    config: Path
    source: Path | None = None  # the checkout whose `reconciler` runs (clean_env); None: this one
    started: list[DaemonProcess] = field(default_factory=list)

    def start(self, env: dict[str, str] | None = None, log: Path | None = None) -> DaemonProcess:
        """`reconciler run` in its own session; stderr goes to `log` (a file nobody must drain)."""
        if current_markers is not None and "daemon" not in current_markers:
            pytest.fail("this test starts the daemon but is not marked `daemon`: request the `daemons` "
                        "fixture (tests/conftest.py marks its users) or add @pytest.mark.daemon", pytrace=False)
        log = log or self.tmp / f"daemon-{len(self.started)}.stderr"
        with open(log, "ab") as err:
            proc = reconciler_process("--config", str(self.config), "run", cwd=self.tmp, env=env, text=False,
                                      stdout=err, stderr=err, source=self.source, start_new_session=True)
        daemon = DaemonProcess(proc, log)
        self.started.append(daemon)
        return daemon

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run_reconciler("--config", str(self.config), *args, cwd=self.tmp, timeout=timeout, source=self.source)

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


@dataclass
class Daemons:
    """The `daemons` fixture: hands out Launchers and kills every daemon they started at teardown."""

    launchers: list[Launcher] = field(default_factory=list)

    def launcher(self, tmp: Path, config: Path) -> Launcher:
        launcher = Launcher(tmp, config)
        self.launchers.append(launcher)
        return launcher

    def close(self) -> None:
        for launcher in self.launchers:
            launcher.close()
