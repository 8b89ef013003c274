"""The `world` of the command line tests: a fresh CliWorld (tests/support/cli_world.py) run from a
neutral cwd. A test module with a world of its own overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import neutral_world
from tests.support.cli_world import CliWorld


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliWorld:
    return neutral_world(tmp_path, monkeypatch, CliWorld)
