"""The state database as a command opens it (cli.state): `store` creates it for a command that
acts; `reader` never does, for a command that only looks, but says which config and state dir it
used and how to reach the service's, and answers from an empty scratch database instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from reconciler.cli.invocation import Invocation
from reconciler.cli.state import reader, store
from reconciler.errors import ConfigError
from tests.support import cli_in_process, neutral_world, write_config
from tests.support.cli_world import DOMAIN

ROOT = Path(__file__).resolve().parents[2]


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


# --- a state directory that cannot be made: a clear error, never a traceback ---------------------

_NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


@pytest.mark.parametrize("command", ["run", "reconcile"])
def test_a_state_dir_the_service_user_cannot_create_is_a_clear_error(command: str) -> None:
    """Without systemd's StateDirectory=, an unprivileged service user cannot create its
    state_dir under a root-owned directory: the daemon and the CLI exit 2 naming the directory
    and the command that makes it, with no traceback, and create nothing."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("needs root and setpriv (util-linux) to run as an unprivileged user")
    with tempfile.TemporaryDirectory(prefix="rcn-") as where:  # pytest's tmp_path is root-only (0700)
        _unprivileged_start(Path(where), command)


def _unprivileged_start(tmp_path: Path, command: str) -> None:
    tmp_path.chmod(0o755)
    root_owned = tmp_path / "lib"
    root_owned.mkdir(mode=0o755)
    state = root_owned / "reconciler"
    config = write_config(tmp_path / "reconciler.toml", repo=tmp_path / "sites.git", state=state)
    config.chmod(0o644)
    done = subprocess.run([*_NOBODY, sys.executable, "-m", "reconciler", "--config", str(config), command],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"state_dir {state} does not exist and cannot be created (Permission denied)" in done.stderr
    assert f"install -d -o reconciler -g reconciler -m 0700 {state}" in done.stderr
    assert not state.exists()


def test_a_state_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """A state_dir path that is taken by a file is refused before anything runs (exit 2)."""
    (tmp_path / "taken").write_text("not a directory\n")
    config = write_config(tmp_path / "reconciler.toml", repo=tmp_path / "sites.git", state=tmp_path / "taken" / "s")
    rc, out, err = cli_in_process(["--config", str(config), "reconcile"])
    assert rc == 2, (out, err)
    assert f"state_dir {tmp_path / 'taken' / 's'} does not exist and cannot be created" in err
    with pytest.raises(ConfigError, match="is not a directory this user can write"):
        Invocation(None, {"state_dir": str(tmp_path / "taken")}).state_dir()
