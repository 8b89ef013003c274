"""`python -m reconciler` as a REAL separate process: the CLI and the daemon, the way an
operator starts them. Every launch goes through `reconciler_process`/`run_reconciler` and
gets the same environment (`clean_env`)."""

from __future__ import annotations

import contextlib
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

# Inherited variables that would change what a child reconciler does: a config it would read,
# a fault it would deal itself, systemd's sockets it would talk to, an output encoding.
SCRUBBED = ("RECONCILER_CONFIG", "RECONCILER_FAULT", "PYTHONIOENCODING",
            "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")

# Set by tests/conftest.py for the running test: the daemon guard below reads it. None outside pytest.
current_markers: set[str] | None = None


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without SCRUBBED, with the checkout importable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def reconciler_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def reconciler_process(*args: str, cwd: Path, env: dict[str, str] | None = None, text: bool = True,
                       stdout: int | IO[Any] | None = subprocess.PIPE, stderr: int | IO[Any] | None = subprocess.PIPE,
                       **popen: Any) -> subprocess.Popen[Any]:
    """`python -m reconciler ARGS` started in `cwd` with clean_env(env); not waited for."""
    return subprocess.Popen(reconciler_argv(*args), cwd=cwd, env=clean_env(env), stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr, text=text,
                            **({"encoding": "utf-8", "errors": "replace"} if text else {}), **popen)


def run_reconciler(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60.0,
                   preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m reconciler ARGS` run to completion; output as text (undecodable bytes replaced)."""
    return subprocess.run(reconciler_argv(*args), cwd=cwd, env=clean_env(env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
                          check=False, preexec_fn=preexec)


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
    """Starts daemons and CLI commands on one config file, in `tmp`; `close` kills every daemon.
    Get one from the `daemons` fixture, which closes it at teardown."""

    tmp: Path
    config: Path
    started: list[DaemonProcess] = field(default_factory=list)

    def start(self, env: dict[str, str] | None = None, log: Path | None = None) -> DaemonProcess:
        """`reconciler run` in its own session; stderr goes to `log` (a file nobody must drain)."""
        if current_markers is not None and "daemon" not in current_markers:
            pytest.fail("this test starts the daemon but is not marked `daemon`: request the `daemons` "
                        "fixture (tests/conftest.py marks its users) or add @pytest.mark.daemon", pytrace=False)
        log = log or self.tmp / f"daemon-{len(self.started)}.stderr"
        with open(log, "ab") as err:
            proc = reconciler_process("--config", str(self.config), "run", cwd=self.tmp, env=env, text=False,
                                      stdout=err, stderr=err, start_new_session=True)
        daemon = DaemonProcess(proc, log)
        self.started.append(daemon)
        return daemon

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run_reconciler("--config", str(self.config), *args, cwd=self.tmp, timeout=timeout)

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
