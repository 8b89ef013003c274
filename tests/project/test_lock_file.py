"""Installs are reproducible: `make` installs requirements.lock, so every dependency the project
declares (and every extra the tests use) must be pinned there, exactly once."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_declared_dependency_is_pinned_in_the_lock_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]}
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"not an exact pin: {line!r}"
            assert _name(name) not in pins, f"pinned twice: {name}"
            pins[_name(name)] = version
    assert not declared - pins.keys(), f"declared but not in requirements.lock: {sorted(declared - pins.keys())}"
    assert "cryptography" in pins and int(pins["cryptography"].split(".")[0]) < 51


def test_make_installs_the_lock_file() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements.lock" in makefile and "--no-deps -e ." in makefile
