"""service/systemd.py and the shipped unit: the unit file passes `systemd-analyze verify` and says
what the daemon relies on; the Notifier sends sd_notify messages as single datagrams to a real
socket (path or abstract), is a no-op outside systemd and derives the watchdog interval."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from reconciler.service.systemd import Notifier

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "reconciler.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_is_a_hardened_notify_service() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "reconciler"
    assert service["WatchdogSec"]
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "true", "PrivateTmp": "true",
                       "NoNewPrivileges": "true"}.items():
        assert service[key] == value, key


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found (install systemd; .ci/run does)")
    # verify checks that ExecStart exists: point it at this checkout's interpreter, unchanged otherwise.
    text = UNIT.read_text().replace("/opt/reconciler/.venv/bin/reconciler run", f"{sys.executable} -m reconciler run")
    unit = tmp_path / "reconciler.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and bad values ("ignoring"): any line about our file is a defect.
    problems = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert problems == [], result.stderr


# --- Notifier against a real datagram socket ---------------------------------------------------------


def _receive(listener: socket.socket) -> str:
    return listener.recv(65536).decode()


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notifier_sends_each_message_as_one_datagram(short_dir: Path, kind: str) -> None:
    address = str(short_dir / "n.sock") if kind == "path" else f"@reconciler-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + address[1:] if address.startswith("@") else address)
        listener.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": address})
        assert notifier.enabled
        notifier.ready("first pass scheduled")
        assert _receive(listener).split("\n") == ["READY=1", "STATUS=first pass scheduled"]
        notifier.status("2 synced, 1 failed")
        assert _receive(listener) == "STATUS=2 synced, 1 failed"
        notifier.watchdog()
        assert _receive(listener) == "WATCHDOG=1"
        notifier.stopping()
        assert "STOPPING=1" in _receive(listener).split("\n")


def test_notifier_is_a_no_op_outside_systemd_and_survives_a_dead_socket(short_dir: Path) -> None:
    quiet = Notifier({})
    assert not quiet.enabled and quiet.watchdog_interval is None
    quiet.ready("x")
    quiet.watchdog()
    # The socket path exists in the environment but nobody listens (systemd went away).
    gone = Notifier({"NOTIFY_SOCKET": str(short_dir / "nobody.sock")})
    gone.ready("x")
    gone.status("y")
    gone.stopping()
    Notifier({"NOTIFY_SOCKET": f"@reconciler-test-{uuid.uuid4().hex}"}).watchdog()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_notifier_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str], expected: float | None) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "@reconciler-test", **environ})
    assert notifier.watchdog_interval == expected
