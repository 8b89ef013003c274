"""Running a server's health checks (remote/health.py) through the local transport: one command
for all of them, one result per check in order, and a command that cannot run at all makes every
check unhealthy with the reason instead of raising."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from reconciler.core.health import HealthCheck
from reconciler.remote import health
from reconciler.remote.protocol.checking import HealthResult
from reconciler.remote.transport.local import LocalTransport


def check(code: str) -> HealthCheck:
    return HealthCheck(command=code, retries=0, interval=0.0, timeout=10.0)


def test_no_probes_send_no_command() -> None:
    transport = LocalTransport()
    assert asyncio.run(health.run(transport, [])) == []
    assert transport.round_trips == 0


def test_every_check_of_a_server_runs_in_one_command_and_answers_in_order(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (two / "ready").write_text("x")
    probes = [health.Probe(str(one), "a.example.com", check("test -f ready")),
              health.Probe(str(two), "b.example.com", check("test -f ready")),
              health.Probe(str(tmp_path / "gone"), "c.example.com", check("true"))]
    transport = LocalTransport()
    results = asyncio.run(health.run(transport, probes))
    assert transport.round_trips == 1
    assert results == [HealthResult(False, "command exited 1 (after 1 try)"),
                       HealthResult(True, "command exited 0"),
                       HealthResult(False, "the release directory is missing")]


def test_a_command_that_cannot_run_makes_every_check_unhealthy_saying_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server has no working mktemp: the health command stops before any check runs.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mktemp").write_text("#!/bin/sh\necho 'mktemp: No space left on device' >&2\nexit 1\n")
    (bindir / "mktemp").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    probes = [health.Probe(str(tmp_path), f"{name}.example.com", check("true")) for name in ("a", "b")]
    results = asyncio.run(health.run(LocalTransport(), probes))
    assert len(results) == 2
    for result in results:
        assert not result.ok
        assert result.detail == ("the health command could not run (exit 1): "
                                 "mktemp: No space left on device")
