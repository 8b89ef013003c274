"""The shipped unit file passes `systemd-analyze verify` and says what the daemon relies on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
