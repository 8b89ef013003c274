"""The state database as a command opens it (cli.state): `store` creates it for a command that
acts; `reader` never does, for a command that only looks, but says which config and state dir it
used and how to reach the service's, and answers from an empty scratch database instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli.invocation import Invocation
from reconciler.cli.state import reader, store
from tests.support import cli_in_process, neutral_world
from tests.support.cli_world import DOMAIN


def test_store_creates_the_database_a_command_that_acts_writes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    opened = store(Invocation(None, {"state_dir": str(state)}))
    try:
        opened.set_meta("probe", "written")
    finally:
        opened.close()
    assert (state / "reconciler.db").is_file()
    again = reader(Invocation(None, {"state_dir": str(state)}))
    try:
        assert again.meta("probe") == "written", "reader opens the database that exists"
    finally:
        again.close()


def test_reader_without_a_database_creates_nothing_and_names_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "reconciler.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    opened = reader(Invocation(str(config), {}))
    try:
        assert opened.sites() == {}, "an empty scratch database answers"
    finally:
        opened.close()
    assert not (tmp_path / "state").exists()
    err = capsys.readouterr().err
    assert f"no state database at {tmp_path / 'state' / 'reconciler.db'} (config {config})" in err, err
    assert "--config /etc/reconciler/reconciler.toml" in err


def test_looking_never_creates_a_state_dir_and_says_what_it_used(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world = neutral_world(tmp_path, monkeypatch)
    world.declare()
    cwd = Path.cwd()
    for command in (["status"], ["status", "--json"], ["history", DOMAIN], ["diff"], ["logs", DOMAIN]):
        err = cli_in_process(["--repo", str(world.decl), *command]).err
        assert not (cwd / "state").exists(), f"{command} created ./state"
        assert "no state database at state/reconciler.db" in err and "no config file" in err, (command, err)
        assert "--config" in err
